"""Data actions: change the participant's profile or the instance context, or record an outcome."""
