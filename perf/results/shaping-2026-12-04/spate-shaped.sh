#!/bin/sh
exec /tmp/shp/spate "$@" --shaping /tmp/shp/shaping-1000.toml
