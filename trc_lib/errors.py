"""The one exception type the command line turns into a clear message instead of a traceback."""


class TRCError(Exception):
    """A user-facing error: bad input, a missing or corrupt file, a mismatch. The message names
    the file or option and says what is wrong."""

    def _render_traceback_(self):  # IPython (a notebook, papermill) shows it as one line too
        return [f"TRCError: {self}"]


def describe_difference(a: dict, b: dict, prefix="") -> list[str]:
    """['key: a_value vs b_value', ...] for the leaves where two nested dicts differ."""
    lines = []
    for key in sorted(set(a) | set(b), key=str):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            lines += describe_difference(va, vb, f"{prefix}{key}.")
        elif va != vb:
            lines.append(f"{prefix}{key}: {va} vs {vb}")
    return lines
