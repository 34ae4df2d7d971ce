"""The Prometheus text format, just enough for the tiers."""


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
