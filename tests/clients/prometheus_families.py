#!/usr/bin/env python3
"""Parses a Prometheus text exposition with the reference client's own parser
(`prometheus_client.parser.text_string_to_metric_families`).

Reads the scraped text on standard input and writes one JSON list: per metric family its
`name` (a counter's without `_total`, as the parser names it), `type`, `help` and
`samples` (`name`, `labels`, `value`). A malformed exposition makes the parser raise.
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    families = []
    for family in text_string_to_metric_families(sys.stdin.read()):
        families.append(
            {
                "name": family.name,
                "type": family.type,
                "help": family.documentation,
                "samples": [
                    {"name": s.name, "labels": s.labels, "value": s.value}
                    for s in family.samples
                ],
            }
        )
    json.dump(families, sys.stdout)


if __name__ == "__main__":
    main()
