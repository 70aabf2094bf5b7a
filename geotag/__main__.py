"""`python -m geotag`, so launchers that take a module work: `torchrun --nproc-per-node N -m geotag train`."""

from geotag.cli import main

if __name__ == "__main__":
    main()
