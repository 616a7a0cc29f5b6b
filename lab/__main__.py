from lab.cli import run

run()
