#!/bin/sh
exec /tmp/shp/spate "$@" --config /tmp/shp/dkim.toml --shaping /tmp/shp/shaping-full-without-pools.toml
