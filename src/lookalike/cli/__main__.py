from lookalike.cli.main import app

app()
