"""``cluster-sim repair DIR``: make a killed run's files open in any HDF5 tool."""
from __future__ import annotations

import argparse
from pathlib import Path


def cmd_repair(args: argparse.Namespace) -> int:
    from cluster_sim.record.repair import repair

    for result in repair(Path(args.run_dir)):
        print(result.describe())
    return 0


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("repair", help="make the files of a killed run readable by any HDF5 tool",
                       description="Copy the complete part of each result file of a killed run into a fresh file "
                                   "(atomic rename), clearing the SWMR writer's open-for-write flag. "
                                   "Refused while a run holds the folder. A later --resume still works.")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_repair)
