"""python -m app ... : the same as the txn command."""

from app.cli import main

main()
