"""The live demo: the gem's README flow and a branching order flow, driven by a job queue."""
