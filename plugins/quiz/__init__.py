"""Quiz plugin: question banks, many item types, server-side grading, GIFT import/export."""
