"""A short training run really learns multi-query associative recall."""

import lightning as L
import pytest

from hybrids import LanguageModel
from hybrids.data import MQAR
from hybrids.learning_status import Criterion
from hybrids.train.callbacks import StopWhenSolved


@pytest.mark.slow
def test_attention_stack_learns_mqar(in_tmp):
    L.seed_everything(0)
    data = MQAR(seq_len=32, num_kv_pairs=4, vocab_size=64, num_train_examples=16_000, num_test_examples=500,
                batch_size=64)
    model = LanguageModel(
        stack=dict(vocab_size=data.vocab_size, d_model=64, n_layers=2, pattern="A", mixers={"A": {"class_path": "hybrids.mixers.Attention", "init_args": {"heads": 2}}}, mlp_expand=0), optim=dict(lr=3e-3, warmup_steps=50),
    )
    # Up to 8 epochs of 250 steps, validated every 125 and stopped at the first validation past
    # 0.95 (it takes a few hundred steps; the whole budget would be ~2 minutes of CPU).
    trainer = L.Trainer(max_epochs=8, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", val_check_interval=125,
                        callbacks=[StopWhenSolved(Criterion(threshold=0.95))])
    trainer.fit(model, data)
    before = 1 / data.num_kv_pairs  # guessing among the values in context
    # Judged on the test set, which the stopping rule never read (it watched validation).
    (tested,) = trainer.test(model, data, verbose=False)
    accuracy = float(tested["test/acc"])
    assert accuracy > 0.9, f"held-out MQAR accuracy {accuracy:.3f} (chance among context values: {before})"
