"""Tests of the quiz plugin (plugins/quiz)."""
