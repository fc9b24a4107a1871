"""The one exception type for problems a user can cause and fix."""

import re


class UserError(Exception):
    """Bad input, config or environment: shown as one line, exit code 2, no traceback.

    The message names the file, line or key and says what was expected. Bugs raise
    ordinary exceptions instead, so that they keep their tracebacks.
    """


def out_of_memory(error: BaseException) -> str | None:
    """What to tell the user when `error` is a failed allocation of host or GPU memory, whichever
    library raised it (a size they chose asks for more than there is); None for anything else."""
    text = " ".join(str(error).split())
    said = re.search(r"can't allocate memory|out of memory", text, re.IGNORECASE)
    if not isinstance(error, MemoryError) and not said:
        return None
    size = re.search(r"tried to allocate ([\d.]+ ?\w+)", text, re.IGNORECASE)
    asked = f" ({size.group(1)} asked for)" if size else ""
    return (
        f"out of memory{asked}; lower the sizes that set it: the model's, the batch's "
        "(batch_size, max_tokens) or the search's (beam_size, max_len_a, max_len_b)"
    )
