"""What people read, never trains: formatting, stories, tables, the terminal display, figures,
the report and the optuna-dashboard publisher.
"""
