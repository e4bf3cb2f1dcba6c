"""The one error the course's commands raise for bad input: ``course`` prints it as one line on
stderr (``course: error: ...``) and exits with code 2."""

from __future__ import annotations


class CourseError(Exception):
    exit_code = 2
