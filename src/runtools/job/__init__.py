"""Running jobs: phases, the program phase, coordination, and the run lifecycle."""
