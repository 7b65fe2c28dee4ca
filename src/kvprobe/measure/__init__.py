"""Measuring: the scheduler (models x repeats, resume), one model's searches, and the executors
that journal and prepare each engine start.

    scheduler.measure_all -> model.ModelSearches -> executors (journal, preparation) -> trial.runner
"""
