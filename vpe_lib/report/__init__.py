"""The report around the stages: run the notebooks and cache their stages (`build`, `stage_cache`), write the
index (`index`), and check the pages in a real browser (`browser_check`, `lab_check`). Nothing here changes
what a stage computes, so these files are not part of the stages' code version."""
