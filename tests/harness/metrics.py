"""The Prometheus text format, just enough for the tiers."""
import re


def metric_prefix_value(text, prefix):
    """The value of the last sample whose line starts with `prefix` (a name and, if given,
    its labels exactly as the exporter prints them: 'name{a="x",b="y"}'); 0 if none."""
    v = 0.0
    for line in text.splitlines():
        if line.startswith(prefix) and not line.startswith("#"):
            parts = line.split()
            if len(parts) >= 2:
                v = float(parts[1])
    return v


def metric_sum(text, name):
    """The sum of every sample of metric `name` (any labels)."""
    s = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            s += float(line.split()[1])
    return s


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def metric_sum_where(text, name, **labels):
    """The sum of the samples of metric `name` whose labels include every given one
    (metric_sum_where(text, "x_total", placement="BOOSTED")); 0 if none match."""
    total = 0.0
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        have = dict(_LABEL.findall(m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total
