"""Run the command-line interface: ``python -m crossbook``."""

from crossbook.cli import app

if __name__ == "__main__":
    app(prog_name="crossbook")
