#!/usr/bin/python3
"""Parses spate's /metrics (read from stdin) with Prometheus's own
OpenMetrics parser (python3-prometheus-client), which refuses malformed
exposition, and prints every sample as one JSON object per line:
{"family", "type", "name", "labels", "value"}."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

text = sys.stdin.read()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        print(json.dumps({"family": family.name, "type": family.type,
                          "name": s.name, "labels": s.labels, "value": s.value}))
