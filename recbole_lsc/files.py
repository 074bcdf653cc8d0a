"""Files written whole or not at all, and their checksums.

Every file the plugin writes (results, leaderboards, checkpoints, caches) goes through
``write_atomic``: an interrupted run never leaves a half-written file that a later run
would read as complete.
"""

import hashlib
import json
import os


def write_atomic(path, write):
    """Call ``write(tmp)`` on a temporary name beside ``path``, then rename it into place.

    An interrupted write leaves neither a partial ``path`` nor the temporary file.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}{os.path.splitext(path)[1]}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path, text):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    write_atomic(path, write)


def write_json_atomic(path, payload):
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def file_sha256(path):
    """SHA-256 of a file's bytes: caches store it to tell a valid entry from a corrupt one."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
