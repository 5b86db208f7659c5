"""Stand-in for ``wbia.constants`` (only the names a plugin uses)."""

ANNOTATION_TABLE = "annotations"
IMAGE_TABLE = "images"
PART_TABLE = "parts"
UNKNOWN = "____"
UNKNOWN_NAME_ROWID = 0
