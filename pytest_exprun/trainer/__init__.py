"""Running one trainer: its process group, its output as lines, how exprun talks to a trainer
it did not write, and which files and versions define its setup."""
