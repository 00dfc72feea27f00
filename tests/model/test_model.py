"""The stack: building from a pattern, config errors, recurrent decoding, optimisation set-up."""

import pytest
import torch

from hybrids import HybridLM, LanguageModel
from hybrids.model.blocks import MLP, Block
from hybrids.mixers import Attention
from hybrids.errors import ConfigError
from hybrids.model.mixer_specs import expand_pattern

ATTN = {"class_path": "hybrids.mixers.Attention", "init_args": {"heads": 2}}
NO_ROPE = {"class_path": "hybrids.mixers.Attention", "init_args": {"heads": 4, "rotary": False}}


def test_pattern_repeats_to_n_layers():
    assert expand_pattern("AB", 5, {"A": 1, "B": 2}) == "ABABA"
    assert expand_pattern("AB", None, {"A": 1, "B": 2}) == "AB"


def test_layers_follow_the_pattern():
    model = HybridLM(50, d_model=16, pattern="AB", n_layers=3, mixers={"A": ATTN, "B": NO_ROPE})
    assert [b.mixer.heads for b in model.blocks] == [2, 4, 2]
    assert [b.mixer.rotary for b in model.blocks] == [True, False, True]


def test_user_mixer_class_plugs_in_without_registry():
    spec = {"class_path": "torch.nn.Linear", "init_args": {"out_features": 16}}
    model = HybridLM(50, d_model=16, pattern="L", mixers={"L": spec})
    assert isinstance(model.blocks[0].mixer, torch.nn.Linear)
    assert model(torch.randint(50, (2, 5))).shape == (2, 5, 50)


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"pattern": "AX"}, "pattern"),
        ({"pattern": ""}, "pattern"),
        ({"mixers": {"A": {"class_path": "hybrids.mixers.Atention"}}}, "mixers.A.class_path"),
        ({"mixers": {"A": {"class_path": "no_such_module.Mixer"}}}, "mixers.A.class_path"),
        ({"mixers": {"A": {"class_path": "hybrids.mixers.attention.torch"}}}, "mixers.A.class_path"),
        ({"mixers": {"A": {"init_args": {}}}}, "mixers.A"),
        ({"mixers": {"A": {"class_path": "hybrids.mixers.Attention", "init_args": {"heads": 3}}}},
         "mixers.A.init_args.heads"),
        ({"mixers": {"A": {"class_path": "hybrids.mixers.Attention", "init_args": {"head": 3}}}},
         "mixers.A.init_args.head"),
        ({"mixers": {"A": {"class_path": "hybrids.mixers.Attention", "init_args": {"d_model": 8}}}},
         "mixers.A.init_args.d_model"),
        ({"mlp": "relu"}, "mlp"),
        ({"n_layers": 0}, "n_layers"),
    ],
)
def test_bad_stacks_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as info:
        HybridLM(50, **{"d_model": 16, "pattern": "A", "mixers": {"A": ATTN}, **kwargs})
    assert info.value.key == key


def test_unknown_class_suggests_the_right_name():
    with pytest.raises(ConfigError, match="did you mean hybrids.mixers.Attention"):
        HybridLM(50, d_model=16, mixers={"A": {"class_path": "hybrids.mixers.Atention"}})


def test_block_without_mlp():
    block = Block(16, Attention(16, heads=2), mlp=None)
    assert block.mlp is None and block(torch.randn(1, 3, 16)).shape == (1, 3, 16)


@pytest.mark.parametrize("kind", ["swiglu", "gelu"])
def test_mlp_kinds(kind):
    assert MLP(8, 12, kind)(torch.randn(2, 8)).shape == (2, 8)


def test_step_matches_forward_logits_and_generate_is_greedy():
    model = HybridLM(40, d_model=16, pattern="AB", n_layers=3, mixers={"A": ATTN, "B": NO_ROPE}).double().eval()
    tokens = torch.randint(40, (2, 9))
    with torch.no_grad():
        parallel = model(tokens)
        states = model.init_state(2)
        for t in range(tokens.shape[1]):
            logits, states = model.step(tokens[:, t], states)
            torch.testing.assert_close(logits, parallel[:, t], rtol=1e-10, atol=1e-10)
    out = model.generate(tokens[:, :4], max_new_tokens=5)
    assert out.shape == (2, 9)
    with torch.no_grad():
        for t in range(4, 9):
            assert torch.equal(model(out[:, :t])[:, -1].argmax(-1), out[:, t])


def test_state_size_sums_layers():
    model = HybridLM(40, d_model=16, pattern="AB", n_layers=3, mixers={"A": ATTN, "B": NO_ROPE})
    # Every layer keeps K and V of width d_model per token.
    assert model.state_size(100) == 3 * 2 * 16 * 100


def test_tied_embeddings_are_counted_once():
    tied = HybridLM(100, d_model=16, mixers={"A": ATTN}, tie_embeddings=True)
    untied = HybridLM(100, d_model=16, mixers={"A": ATTN}, tie_embeddings=False)
    assert untied.num_parameters() - tied.num_parameters() == 100 * 16


class _FakeTrainer:
    estimated_stepping_batches = 1000


def test_optimizer_groups_and_schedule():
    lm = LanguageModel(stack=dict(vocab_size=40, d_model=16, mixers={"A": ATTN}), optim=dict(lr=1e-2, warmup_steps=100, min_lr_ratio=0.1))
    lm.trainer = _FakeTrainer()
    config = lm.configure_optimizers()
    decay, no_decay = config["optimizer"].param_groups
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) > 0
    schedule = config["lr_scheduler"]["scheduler"]
    factors = [schedule.lr_lambdas[0](s) for s in (0, 49, 99, 100, 550, 999, 5000)]
    assert factors[0] == pytest.approx(0.01) and factors[2] == pytest.approx(1.0)
    assert factors[3] == pytest.approx(1.0) and factors[4] == pytest.approx(0.55)
    assert factors[5] == pytest.approx(0.1, abs=1e-4) and factors[6] == pytest.approx(0.1)


def test_loss_and_accuracy_ignore_unlabelled_positions():
    lm = LanguageModel(stack=dict(vocab_size=10, d_model=16, mixers={"A": ATTN}))
    lm.log = lambda *args, **kwargs: None  # no trainer attached
    inputs = torch.randint(10, (2, 6))
    labels = torch.full((2, 6), -100)
    with torch.no_grad():
        logits = lm(inputs)
    predicted = logits.argmax(-1)
    labels[0, 3] = predicted[0, 3]  # right
    labels[1, 5] = (predicted[1, 5] + 1) % 10  # wrong
    with torch.no_grad():
        lm.validation_step((inputs, labels), 0)
    assert float(lm.metrics["val_acc"].compute()) == 0.5
    expected_loss = torch.nn.functional.cross_entropy(
        torch.stack([logits[0, 3], logits[1, 5]]), torch.stack([labels[0, 3], labels[1, 5]])
    )
    torch.testing.assert_close(lm.metrics["val_loss"].compute(), expected_loss)


def test_epoch_accuracy_weights_batches_by_labelled_tokens():
    lm = LanguageModel(stack=dict(vocab_size=10, d_model=16, mixers={"A": ATTN}))
    lm.log = lambda *args, **kwargs: None
    inputs = torch.randint(10, (1, 6))
    with torch.no_grad():
        predicted = lm(inputs).argmax(-1)
        right = torch.full((1, 6), -100)
        right[0, :3] = predicted[0, :3]  # 3 labels, all right
        wrong = torch.full((1, 6), -100)
        wrong[0, 0] = (predicted[0, 0] + 1) % 10  # 1 label, wrong
        lm.validation_step((inputs, right), 0)
        lm.validation_step((inputs, wrong), 1)
    assert float(lm.metrics["val_acc"].compute()) == 0.75  # 3 of 4 tokens, not the mean of 1 and 0


def test_unbounded_training_keeps_lr_flat_after_warmup():
    class Unbounded:
        estimated_stepping_batches = float("inf")

    lm = LanguageModel(stack=dict(vocab_size=40, d_model=16, mixers={"A": ATTN}), optim=dict(warmup_steps=10))
    lm.trainer = Unbounded()
    with pytest.warns(UserWarning, match="unbounded"):
        config = lm.configure_optimizers()
    factor = config["lr_scheduler"]["scheduler"].lr_lambdas[0]
    assert factor(4) == pytest.approx(0.5) and factor(10) == 1.0 and factor(10**6) == 1.0


def test_mixer_family_follows_the_layers_used():
    from hybrids.lab.analysis import mixer_family

    mixers = {"A": ATTN, "L": {"class_path": "torch.nn.Linear"}}
    assert mixer_family({"pattern": "AL", "n_layers": 1, "mixers": mixers}) == "Attention"
    assert mixer_family({"pattern": "AL", "n_layers": 2, "mixers": mixers}) == "Attention+Linear"
    # Pattern order, each class once: which mixer comes first is part of the design.
    assert mixer_family({"pattern": "LA", "n_layers": 2, "mixers": mixers}) == "Linear+Attention"
    assert mixer_family({"pattern": "LAL", "n_layers": 3, "mixers": mixers}) == "Linear+Attention"
    assert mixer_family({}) == "Attention"


def test_one_config_object_defines_the_stack_arguments():
    """StackConfig and OptimConfig are the one place of the stack's and the optimiser's arguments
    and defaults: LanguageModel takes them as typed arguments (which jsonargparse reads field by
    field), repeats none of their fields, and HybridLM is built from the same object."""
    import dataclasses
    import inspect
    import typing

    from hybrids import LanguageModel
    from hybrids.model.config import ARCHITECTURE_KEYS, StackConfig
    from hybrids.train.optim import OptimConfig

    hints = typing.get_type_hints(LanguageModel.__init__)
    assert hints["stack"] is StackConfig and hints["optim"] is OptimConfig
    signature = inspect.signature(LanguageModel.__init__).parameters
    fields = {f.name for cls in (StackConfig, OptimConfig) for f in dataclasses.fields(cls)}
    assert not fields & set(signature), "LanguageModel repeats a field of StackConfig or OptimConfig"
    assert signature["optim"].default == OptimConfig()
    assert set(ARCHITECTURE_KEYS) == set(StackConfig.field_names()) - {"dropout"}
    config = StackConfig(vocab_size=50, d_model=16, pattern="AB", n_layers=3, mixers={"A": ATTN, "B": NO_ROPE})
    assert HybridLM(config).config == HybridLM(50, d_model=16, pattern="AB", n_layers=3, mixers={"A": ATTN, "B": NO_ROPE}).config
    lm = LanguageModel(stack=dict(vocab_size=50, d_model=16, mixers={"A": ATTN}))
    assert lm.config == StackConfig(vocab_size=50, d_model=16, mixers={"A": ATTN}) and lm.optim == OptimConfig()
    assert LanguageModel(StackConfig(vocab_size=50, d_model=16), OptimConfig(lr=1e-3)).optim.lr == 1e-3


def test_the_cli_reads_the_defaults_from_the_dataclasses(in_tmp, capsys):
    """--print_config shows the stack and optimiser defaults as the dataclasses define them."""
    import yaml

    from hybrids.cli.fit import build_cli
    from hybrids.model.config import StackConfig
    from hybrids.train.model_args import defaults
    from hybrids.train.optim import OptimConfig

    with pytest.raises(SystemExit):
        build_cli(["fit", "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    for group, cls in (("stack", StackConfig), ("optim", OptimConfig)):
        for name, default in defaults(cls).items():
            value = printed[group][name]
            assert (list(value) if isinstance(default, tuple) else value) == (list(default) if isinstance(default, tuple) else default), (group, name)


def test_flat_configs_of_older_runs_still_load_with_a_note(in_tmp, capsys):
    """The flat spelling (--model.init_args.d_model, or a flat YAML) is moved under stack / optim."""
    import yaml

    from hybrids.cli.fit import build_cli

    flat = {"model": {"class_path": "hybrids.LanguageModel",
                      "init_args": {"d_model": 32, "lr": 1e-3, "mixers": {"A": ATTN}}}}
    (in_tmp / "flat.yaml").write_text(yaml.safe_dump(flat))
    cli = build_cli(["fit", "-c", "flat.yaml", "--model.init_args.weight_decay=0.0", "--trainer.fast_dev_run=true",
                     "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    assert cli.model.config.d_model == 32 and cli.model.optim.lr == 1e-3 and cli.model.optim.weight_decay == 0.0
    err = capsys.readouterr().err
    assert "flat.yaml: model.init_args keys moved under stack / optim (d_model -> stack.d_model" in err
    assert "the command line: model.init_args keys moved under stack / optim (weight_decay -> optim.weight_decay)" in err


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"d_model": 0}, "d_model"),
        ({"d_model": "wide"}, "d_model"),
        ({"n_layers": 0}, "n_layers"),
        ({"mlp": "relu"}, "mlp"),
        ({"mlp_expand": -1}, "mlp_expand"),
        ({"dropout": 1.5}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"tie_embeddings": "yes"}, "tie_embeddings"),
        ({"pattern": ""}, "pattern"),
    ],
)
def test_stack_config_errors_name_the_key_and_their_section(kwargs, key):
    from hybrids import LanguageModel
    from hybrids.model.config import StackConfig

    # Keyed as the CLI spells them (the stack is LanguageModel's `stack` argument); the message
    # itself names the field as the Python user wrote it.
    with pytest.raises(ConfigError) as info:
        StackConfig(vocab_size=10, **kwargs)
    assert info.value.key == key and info.value.full_key == f"model.init_args.stack.{key}"
    with pytest.raises(ConfigError) as info:
        LanguageModel(stack=dict(vocab_size=10, **kwargs))
    assert info.value.full_key == f"model.init_args.stack.{key}"


def test_data_module_errors_carry_the_data_section():
    from hybrids.data import MQAR

    with pytest.raises(ConfigError) as info:
        MQAR(seq_len=63)
    assert info.value.full_key == "data.init_args.seq_len"


class _BrokenStateSize(torch.nn.Module):
    def __init__(self, d_model):
        super().__init__()
        self.proj = torch.nn.Linear(d_model, d_model)

    def forward(self, x):
        return self.proj(x)

    def state_size(self, seq_len):
        return seq_len + "tokens"  # a bug inside the mixer: TypeError


def test_missing_state_size_is_told_apart_from_a_bug_inside_one():
    from hybrids.errors import StateSizeUnknown

    without = HybridLM(20, d_model=8, pattern="L", n_layers=1, mixers={"L": {"class_path": "torch.nn.Identity"}})
    with pytest.raises(StateSizeUnknown, match="layer 0 \\(Identity\\)"):
        without.state_size(16)
    broken = HybridLM(20, d_model=8, pattern="B", n_layers=1, mixers={"B": {"class_path": f"{__name__}._BrokenStateSize"}})
    with pytest.raises(TypeError) as info:
        broken.state_size(16)
    assert not isinstance(info.value, StateSizeUnknown)


def test_epoch_means_keep_nan_and_their_weights():
    from hybrids.train.metrics import WeightedMean

    mean = WeightedMean()
    mean.update(torch.tensor(1.0), torch.tensor(3.0))
    mean.update(torch.tensor(0.0), torch.tensor(1.0))
    assert float(mean.compute()) == 0.75
    mean.update(torch.tensor(float("nan")), torch.tensor(1.0))
    assert torch.isnan(mean.compute())
