"""JSON lines as the benchmark drivers read them (bench/compare.py, bench/loss_curve.py)."""
import json


def parse_json_lines(text):
    """Every line of `text` that is a JSON object, in order; anything else (logs, warnings) is skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out
