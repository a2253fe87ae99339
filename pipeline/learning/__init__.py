"""The learning room: how AET trains a model, adapts the champion to drift, and decides what serves.

An adaptation round (``round.py``) trains a copy of the champion on recent
labeled examples with the AET objective (``objective.py``)::

    L = CE(y, f_θ(x))  +  λ_ewc/2 · Σ_i F_i (θ_i − θ*_i)²  +  λ_att · KL(A_θ*(x) ‖ A_θ(x))

- the cross-entropy runs on the recent examples plus a rehearsal sample of
  older ones from the reservoir (``rehearsal.py``), so the old data is still
  seen;
- the elastic anchor (``terms/elastic.py``) holds the weights the champion θ*
  relies on, weighted by its diagonal Fisher F (``fisher.py``, re-estimated
  after each round and merged as ``F ← γ·F_old + F_new``);
- attention distillation (``terms/attention.py``) keeps the student's
  attention maps A_θ close to the champion's on rehearsal inputs x.

Each term has a weight and can be switched off (``ObjectiveSettings`` in
pipeline/config.py). What trains is the round's mode (``trainable.py``):
``full`` (every weight), ``attention`` (attention projections + head) or
``lora`` (low-rank adapters on them + head, merged before saving); each mode
has its own default learning rate.

Both a round and bootstrapping the first champion (``bootstrap.py``) train
through one loop (``loop.py``) on labeled examples (``examples.py``), also
data-parallel under torchrun (``distributed.py``). The champion/challenger
gate (``promotion.py``) and the automatic rollback (``rollback.py``) decide
which model serves.

A new loss term is a module in ``terms/`` with a class that subclasses
``terms.LossTerm`` (a ``name``, ``needs_attentions``, optional ``setup`` and
``teardown`` hooks, and ``__call__(step)``), switched on in
``objective.objective_terms`` by a weight in ``ObjectiveSettings``.
"""
