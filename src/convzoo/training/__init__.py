"""Training: the loop, its optimizers and schedules, checkpoints and exact resume, the run folder,
fine-tuning, time budgets, torchrun restarts. Validation runs through `inference.evaluate`.

- train.fit(cfg, out): the training loop (cfg: the RunConfig of convzoo.recipes.resolve)
- optim: optimizers, the papers' lr schedules, EMA and Lookahead
- checkpoint: atomic writes, exact resume; runfolder: the run folder and the files of an epoch
- resilience: stop signals, restarts; faults: the one fault-injection hook
"""
