"""A bench from plan to stored run: plan, prepare, supervise workers, aggregate, commit, resume;
executors local and Ray.
"""
