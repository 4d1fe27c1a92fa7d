"""python -m app ... : the same as the txn command."""

from app.main import main

main()
