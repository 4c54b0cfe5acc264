"""Squirrel: save, compare and restore the state of an EPICS control system."""

from squirrel.celery import app as celery_app

__all__ = ("celery_app",)
