"""``python -m archdsl`` runs archc."""
from .cli import main

main()
