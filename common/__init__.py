"""What both jobs share: exit codes, errors, settings, logging, storage and provenance."""
