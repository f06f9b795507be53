"""``python -m molfuse``: the ``molfuse`` command (:mod:`molfuse.cli`)."""

from molfuse.cli import main

if __name__ == "__main__":  # pragma: no cover - run as a module
    main(prog_name="molfuse")
