"""Health at a glance: the console's home page figures, gathered from the
services below (`overview`). A layer of its own above inspection, scheduling
and workers, because it reads all three (packages on one layer line never
import each other)."""
