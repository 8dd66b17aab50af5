"""The config tree and everything read from it before a run starts: option files, the teacher=/student=
role groups, the value checks every setting goes through, the whole-config validation, the seeds."""
