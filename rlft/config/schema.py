"""The sections of the run configuration: one pydantic v2 model per concern, ``RunConfig`` at the
root, with the checks that span sections (``RunConfig``'s validators).

>>> StageConfig(kind="rl", steps=100, lr=0.0).lr      # 0: a control run, the policy stays
0.0
>>> RunConfig().rollout.group_size >= 2
True
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from rlft.algorithms import ADVANTAGES, KL_ESTIMATORS, POLICY_LOSSES, AggregationMode, Registry
from rlft.algorithms.registry import closest
from rlft.config.base import NonNegative, Positive, Section
from rlft.config.cluster import ClusterConfig
from rlft.config.evaluation import EvalConfig, check_correct
from rlft.curriculum import SAMPLERS
from rlft.plugins import import_plugin, resolve_plugin


class _AlgoChoice(Section):
    """A registered function chosen by name, with hyperparameters checked against its signature."""

    _registry: typing.ClassVar[Registry]

    name: str
    """Registered name of the function."""
    params: dict[str, Any] = {}
    """Keyword hyperparameters of the function; unset ones keep the function's defaults."""

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        cls._registry.get(name)  # raises with the valid names
        return name

    @field_validator("params")
    @classmethod
    def _known_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if name is None:  # the name itself failed; that error is reported
            return params
        return cls._registry.validate_params(name, params)


class AdvantageChoice(_AlgoChoice):
    _registry = ADVANTAGES
    name: str = "grpo"
    """Advantage estimator from ``rlft.algorithms.ADVANTAGES`` (grpo, dr_grpo, rloo, reinforce_pp_baseline, or a plugin's)."""


class PolicyLossChoice(_AlgoChoice):
    _registry = POLICY_LOSSES
    name: str = "ppo_clip"
    """Policy loss from ``rlft.algorithms.POLICY_LOSSES`` (ppo_clip, gspo, cispo, topr, decoupled_ppo, reinforce, or a plugin's)."""


class KLConfig(Section):
    estimator: str = "k3"
    """KL estimator from ``rlft.algorithms.KL_ESTIMATORS``: k1, k2 or k3."""
    coef: NonNegative = 0.0
    """Weight beta of the KL term; 0 disables it and no reference model is loaded."""
    placement: Literal["loss", "reward"] = "loss"
    """``loss``: add beta * KL to the policy loss (GRPO); ``reward``: subtract it from token rewards (PPO, needs ``critic``)."""
    target: Positive | None = None
    """Adaptive KL controller (``placement: reward``): the sequence KL (summed over tokens, averaged
    over the batch) that beta is steered towards; None keeps beta fixed."""
    horizon: Annotated[int, Field(ge=1)] = 10000
    """Adaptive KL controller: samples over which beta may change by at most 20%."""
    reference: Literal["after_sft", "base"] = "after_sft"
    """The frozen model the KL is measured against. ``after_sft``: an RL stage that follows an SFT
    stage measures it against the policy as that SFT stage left it (snapshotted into
    ``RUN_DIR/reference/<stage>/`` and kept in checkpoints), so the KL is 0 at the stage's first
    step; other RL stages keep the reference they had (``model.path`` at first). ``base``: always
    ``model.path``."""

    @field_validator("estimator")
    @classmethod
    def _known(cls, name: str) -> str:
        KL_ESTIMATORS.get(name)
        return name


class ModelConfig(Section):
    path: str = "builtin:tiny"
    """Hugging Face model id or local directory; ``builtin:tiny`` is rlft's tiny character-level model."""
    tokenizer: str | None = None
    """Tokenizer id or directory; None uses the model's."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype of the learner and of the rollout engines."""
    trust_remote_code: bool = False
    """Allow model code shipped with the checkpoint (needed by some hub models)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""


class DataSourceConfig(Section):
    path: str
    """A training set (the formats of ``data.train_path``)."""
    weight: Annotated[float, Field(gt=0)] = 1.0
    """Its share of the prompts drawn by the ``weighted_sources`` sampler."""
    name: str | None = None
    """Its name in metrics and as the prompts' ``source`` category (default: the file's stem or the task)."""

    @property
    def label(self) -> str:
        """``name``, else the task of a ``builtin:`` path, else the file or directory stem."""
        if self.name:
            return self.name
        if self.path.startswith("builtin:"):
            return self.path.split(":")[1]
        return Path(self.path).stem


class DataConfig(Section):
    train_path: str = "builtin:arithmetic"
    """Training prompts: a .jsonl/.parquet file, a ``datasets`` directory saved to disk, or ``builtin:<task>``."""
    eval_path: str | None = None
    """Held-out prompts for evaluation (same formats); None uses the built-in task's held-out split."""
    prompt_field: str = "prompt"
    """Column holding the prompt: text, or a list of chat messages (``{role, content}``, TRL's
    conversational format, verl's rows). Every ``*_field`` may be a dotted path into nested fields."""
    answer_field: str | None = "answer"
    """Column holding the reference answer passed to the rewards (e.g. ``reward_model.ground_truth``);
    None when the rewards need none."""
    solution_field: str | None = None
    """Column holding the reference completion that SFT stages train on (text, or one assistant
    message); None: a chat prompt's last message when it is the assistant's (the built-in tasks
    bring their own)."""
    metadata_fields: list[str] = []
    """Further columns passed to rewards and the curriculum (e.g. category, difficulty, tests),
    under their names as written here."""
    chat_template: str = "auto"
    """Apply the tokenizer's chat template: ``auto`` when the tokenizer has one, ``on`` (it must),
    ``off``, or a Jinja chat template given here (for a tokenizer without one, or to replace it).
    Chat-message prompts need one."""
    system_prompt: str | None = None
    """System message prepended when a chat template is applied (to chat prompts that have none)."""
    max_prompt_tokens: Annotated[int, Field(ge=1)] | None = None
    """Prompts longer than this after templating are handled by ``too_long``; None: the model's context
    minus ``rollout.max_new_tokens`` (always the limit when smaller)."""
    too_long: Literal["skip", "error"] = "error"
    """What to do with a prompt over the limit (``max_prompt_tokens``, or what the model's context leaves
    for ``rollout.max_new_tokens``): drop it (counted and reported) or fail."""
    sources: list[DataSourceConfig] = []
    """Several training sets mixed (replaces ``train_path``): each prompt's ``source`` metadata names
    its set, for ``curriculum.category_field: source`` (``weighted_sources`` takes the weights)."""

    @field_validator("chat_template", mode="before")
    @classmethod
    def _chat_template(cls, value: Any) -> Any:
        """YAML reads a bare ``off``/``on`` as a boolean: take it as the mode it spells."""
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, str) and value not in ("auto", "on", "off") and "{{" not in value and "{%" not in value:
            hint = closest(value, ["auto", "on", "off"])
            did = f" (did you mean '{hint}'?)" if hint else ""
            raise ValueError(
                f"chat_template must be auto, on, off or a Jinja chat template, got {value!r}{did}"
            )
        return value

    @model_validator(mode="after")
    def _unique_sources(self) -> DataConfig:
        labels = [s.label for s in self.sources]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"data source names must be unique, {', '.join(dupes)} repeats: give each a 'name'")
        return self


class RolloutConfig(Section):
    num_workers: Annotated[int, Field(ge=1)] = 1
    """Number of rollout workers, one vLLM engine each."""
    prompts_per_step: Annotated[int, Field(ge=1)] = 8
    """Prompts sampled per training step; the batch holds prompts_per_step * group_size completions."""
    group_size: Annotated[int, Field(ge=1)] = 8
    """Completions generated per prompt (G); group-relative estimators need at least 2."""
    temperature: NonNegative = 1.0
    """Sampling temperature; 0 is greedy."""
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Nucleus sampling mass."""
    top_k: int = -1
    """Sample from the k most likely tokens; -1 disables."""
    max_new_tokens: Annotated[int, Field(ge=1)] = 128
    """Maximum completion length in tokens."""
    stop: list[str] = []
    """Strings that end a completion."""
    seed: int | None = None
    """Sampling seed; None derives it from the run's seed."""
    tensor_parallel_size: Annotated[int, Field(ge=1)] = 1
    """GPUs per engine (tensor parallelism); 1 on CPU."""
    engine_kwargs: dict[str, Any] = {}
    """Extra keyword arguments for the vLLM engine, over rlft's defaults."""
    weight_sync: Literal["shm", "object_store"] = "shm"
    """How new weights reach the engines: ``shm`` (safetensors files in /dev/shm, same machine) or ``object_store`` (Ray object store, across machines)."""
    weight_sync_params: dict[str, Any] = {}
    """Backend options, e.g. ``{bucket_bytes: 67108864}`` (checked when the backend is built)."""
    max_staleness: Annotated[int, Field(ge=0)] = 0
    """Asynchronous pipeline: the engines generate the batches of up to this many upcoming steps while
    the learner trains, so a batch may hold rollouts of policy versions ``v - k .. v``; older ones are
    dropped (``async/stale_dropped``). 0 is the synchronous loop (generate, score, train, sync)."""
    inflight_updates: Literal["wait", "abort"] = "wait"
    """With ``max_staleness > 0``, how new weights reach engines that are generating: ``wait`` loads
    them once the engine's current request finishes; ``abort`` stops its unfinished groups, loads,
    and re-issues those groups under the new weights (fresher samples, some generation thrown away)."""

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, k: int) -> int:
        if k != -1 and k < 1:
            raise ValueError(f"top_k must be -1 (off) or >= 1, got {k}")
        return k


class RewardFunctionConfig(Section):
    name: str | None = None
    """A registered reward's name (e.g. ``exact_match``, ``math_verify``; ``rlft check`` lists them)."""
    path: str | None = None
    """Or a user function: ``my_pkg.rewards:score`` (module) or ``./my_rewards.py:score`` (file)."""
    label: str | None = None
    """Name of this reward in metrics and logs (default: ``name``, or the function's name)."""
    weight: float = 1.0
    """Weight of this reward in the weighted sum."""
    params: dict[str, Any] = {}
    """Keyword arguments passed to the reward function (they win over dataset fields of the same name)."""
    timeout_s: Positive | None = None
    """Per-call time limit of this reward; None takes ``reward.timeout_s``."""

    @field_validator("path")
    @classmethod
    def _absolute_file(cls, path: str | None, info: ValidationInfo) -> str | None:
        """A relative ``file.py:function`` resolves against the config file's directory (else the
        working directory) once, here, so every process reads the same file."""
        if path is None or ":" not in path:
            return path
        target, _, fn = path.rpartition(":")
        if not (target.endswith(".py") or "/" in target) or Path(target).expanduser().is_absolute():
            return path
        base = Path((info.context or {}).get("base_dir") or Path.cwd())
        return f"{(base / target).resolve()}:{fn}"

    @model_validator(mode="after")
    def _one_source(self) -> RewardFunctionConfig:
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of 'name' or 'path' for a reward function")
        if self.path is not None and ":" not in self.path:
            raise ValueError(
                f"reward path {self.path!r} must name the function: 'module:function' or 'file.py:function'"
            )
        return self

    @property
    def key(self) -> str:
        """The reward's name in metrics: ``label``, else ``name``, else the function's name."""
        return self.label or self.name or str(self.path).rsplit(":", 1)[1]


class JudgeConfig(Section):
    model: str
    """Judge model: a local Hugging Face directory (or ``builtin:tiny`` for tests)."""
    max_new_tokens: Annotated[int, Field(ge=1)] = 16
    """Tokens the judge may write per verdict."""
    temperature: NonNegative = 0.0
    """Judge sampling temperature (0 = greedy, reproducible verdicts)."""
    num_gpus: NonNegative = 0.0
    """GPUs of the judge engine actor (0 on CPU)."""
    num_cpus: Positive = 1.0
    """CPUs of the judge engine actor."""
    engine_kwargs: dict[str, Any] = {}
    """Extra ``vllm.LLM`` arguments of the judge engine (CPU-safe defaults are applied first)."""


class SandboxConfig(Section):
    """Where rewards run untrusted code (``code_tests``; your own rewards through ``rewards.sandbox``)."""

    name: Annotated[str, Field(min_length=1)] = "namespaces"
    """``rewards.sandbox.SANDBOXES``: ``namespaces`` (default; Linux namespaces, seccomp), ``remote``
    (an HTTP service, ``params: {url: ...}``) or ``weak_process`` (WEAK: no OS isolation)."""
    params: dict[str, Any] = {}
    """Keyword parameters of the backend (checked against its factory when reward workers start)."""


class RewardConfig(Section):
    functions: list[RewardFunctionConfig] = []
    """Reward functions, summed by weight; empty uses the built-in task's own verifier."""
    num_workers: Annotated[int, Field(ge=1)] = 1
    """Reward worker actors; samples are spread across them."""
    processes_per_worker: Annotated[int, Field(ge=1)] = 2
    """Isolated processes per reward worker that run the reward calls."""
    timeout_s: Positive = 5.0
    """Per-call time limit; a reward that exceeds it marks the sample failed (not a score of 0)."""
    memory_mb: Annotated[int, Field(ge=64)] = 2048
    """Memory (address space, MiB) a reward call may allocate on top of its process's start-up size."""
    max_failure_rate: Annotated[float, Field(ge=0, le=1)] = 0.5
    """A step whose fraction of failed samples exceeds this stops the run with an error."""
    log_errors: Annotated[int, Field(ge=0)] = 3
    """The first N reward errors of each step are logged with their sample."""
    judge: JudgeConfig | None = None
    """The judge engine for model-based rewards (``llm_judge``, ``rubric``)."""
    sandbox: SandboxConfig = SandboxConfig()
    """The sandbox for rewards that run code; the run refuses to start where it cannot run."""

    @model_validator(mode="after")
    def _unique_keys(self) -> RewardConfig:
        keys = [f.key for f in self.functions]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"reward names must be unique, {', '.join(dupes)} repeats: give each a 'label'")
        return self


class DynamicSamplingConfig(Section):
    enabled: bool = False
    """DAPO dynamic sampling: drop groups whose rewards are all equal and draw more prompts until the
    step has ``rollout.prompts_per_step`` groups with signal."""
    max_extra_rounds: Annotated[int, Field(ge=0)] = 3
    """Extra generation rounds per step at most; when they run out the step trains on the groups it
    has (logged as ``sampling/groups_short``), it never fails."""


class AlgoConfig(Section):
    advantage: AdvantageChoice = AdvantageChoice()
    """How outcome rewards become advantages."""
    loss: PolicyLossChoice = PolicyLossChoice()
    """The per-token policy loss."""
    aggregation: AggregationMode = "token-mean"
    """Reduction of the per-token loss: token-mean, seq-mean-token-mean or seq-mean-token-sum-norm."""
    kl: KLConfig = KLConfig()
    """KL regularisation towards the frozen reference model."""
    tis_cap: Positive | None = None
    """Truncated importance sampling cap C against the rollout engine's logprobs; None disables."""
    filter_zero_variance: bool = False
    """Drop groups whose rewards are all equal (they carry no advantage) before the learner step."""
    dynamic_sampling: DynamicSamplingConfig = DynamicSamplingConfig()
    """Refill the batch with fresh prompts for the groups dropped for zero variance (DAPO)."""

    @model_validator(mode="after")
    def _one_behaviour_weight(self) -> AlgoConfig:
        if self.tis_cap is not None and self.loss.name == "decoupled_ppo":
            raise ValueError(
                "decoupled_ppo already weights each token by exp(old_logprobs - rollout_logprobs) (capped "
                "by its behaviour_cap): remove algo.tis_cap, which would apply that weight twice"
            )
        return self


class CriticConfig(Section):
    """PPO's learned value model (setting ``critic`` makes the RL stages PPO with GAE advantages).

    A causal-LM backbone with a scalar value head, trained on its own group of ranks with its own
    AdamW. Each step: the critic values the batch, GAE turns token rewards (the outcome reward on the
    last token, minus beta x KL per token with ``algo.kl.placement: reward``) into advantages and
    returns, the critic regresses the returns, and the policy trains on the whitened advantages."""

    model_path: str | None = None
    """Backbone of the value model; None starts from the policy's model (``model.path``)."""
    num_ranks: Annotated[int, Field(ge=1)] = 1
    """Data-parallel critic ranks."""
    lr: Positive = 1e-5
    """AdamW learning rate of the critic (constant)."""
    weight_decay: NonNegative = 0.0
    """AdamW weight decay."""
    max_grad_norm: Positive | None = 1.0
    """Clip the critic's global gradient norm; None disables clipping."""
    micro_batch_size: Annotated[int, Field(ge=1)] = 8
    """Sequences per forward/backward pass on one critic rank."""
    epochs: Annotated[int, Field(ge=1)] = 1
    """Critic optimizer steps per batch."""
    value_clip: Positive | None = 0.2
    """Clip the new value to within this of the old one in the loss (PPO2); None: plain squared error."""
    value_loss_coef: Positive = 0.5
    """Weight of the value loss."""
    gamma: Annotated[float, Field(ge=0, le=1)] = 1.0
    """GAE discount."""
    lam: Annotated[float, Field(ge=0, le=1)] = 0.95
    """GAE lambda."""
    whiten_advantages: bool = True
    """Normalise the advantages over the batch's valid tokens (zero mean, unit variance)."""
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    """RL steps at the start that train only the critic (the policy and its engines stay put)."""


class LearnerConfig(Section):
    num_ranks: Annotated[int, Field(ge=1)] = 1
    """Data-parallel learner ranks (one torch.distributed process each)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device of the learner; ``auto`` takes CUDA when Ray gives the rank a GPU."""
    lr: Positive = 1e-6
    """Peak learning rate of AdamW."""
    weight_decay: NonNegative = 0.0
    """AdamW weight decay."""
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    """AdamW betas."""
    adam_eps: Positive = 1e-8
    """AdamW epsilon."""
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Decay after warm-up (to 0 at the last step for linear and cosine)."""
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    """Steps of linear warm-up from 0 to ``lr``."""
    max_grad_norm: Positive | None = 1.0
    """Clip the global gradient norm to this value; None disables clipping."""
    max_consecutive_skips: Annotated[int, Field(ge=1)] = 5
    """Stop the run when this many learner steps in a row are skipped for a non-finite loss or
    gradient (a skipped step leaves weights and optimizer state untouched)."""
    micro_batch_size: Annotated[int, Field(ge=1)] = 8
    """Sequences per forward/backward pass on one rank (gradient accumulation above it)."""
    ppo_epochs: Annotated[int, Field(ge=1)] = 1
    """Passes over each rollout batch."""
    mini_batches: Annotated[int, Field(ge=1)] = 1
    """Optimizer steps per epoch (the batch is split into this many mini-batches)."""


class CurriculumConfig(_AlgoChoice):
    _registry = SAMPLERS
    name: str = "uniform"
    """Prompt sampler from ``rlft.curriculum.SAMPLERS``: uniform, weighted_sources, sec, dump,
    learnability, difficulty_pools (or a plugin's); see the README's Curriculum section."""
    category_field: str = "category"
    """The prompt metadata field that names its category (a dataset column in ``data.metadata_fields``;
    the built-in task has ``category`` and ``difficulty``)."""


LoggerName = Literal["console", "jsonl", "tensorboard", "wandb"]


class WandbConfig(Section):
    project: str = "rlft"
    """Weights & Biases project."""
    entity: str | None = None
    """Team or user; None: the API key's default entity."""
    name: str | None = None
    """Run name; None: the run directory's name."""
    tags: list[str] = []
    """Tags of the wandb run."""
    mode: Literal["auto", "online", "offline"] = "auto"
    """``auto``: online when an API key is configured (WANDB_API_KEY or ~/.netrc), offline otherwise;
    never prompts. An offline run can be uploaded later with ``wandb sync``."""


class LoggingConfig(Section):
    backends: list[LoggerName] = ["console", "jsonl"]
    """Metric sinks: console, jsonl (always written), tensorboard, wandb."""
    run_root: str = "runs"
    """Directory under which each run gets ``<name>-<timestamp>/``."""
    log_every: Annotated[int, Field(ge=1)] = 1
    """Log metrics every this many steps."""
    progress: Literal["auto", "bar", "lines", "quiet"] = "auto"
    """Console: a live progress bar per stage (``auto`` when the console is a terminal), one compact
    line per step, or nothing but warnings and the summary."""
    sample_every: Annotated[int, Field(ge=0)] = 10
    """Log sample completions (prompt, completion, rewards) every this many RL steps; 0 never."""
    samples_per_step: Annotated[int, Field(ge=1)] = 8
    """Sample completions logged each time."""
    report: bool = True
    """Write the HTML run report (``report/index.html`` with plots) when the run ends."""
    wandb: WandbConfig = WandbConfig()
    """Weights & Biases settings (used when ``wandb`` is among the backends)."""


class CheckpointConfig(Section):
    every: Annotated[int, Field(ge=0)] = 0
    """Save every this many steps (and at the end of the run); 0 saves at the end only."""
    keep_last: Annotated[int, Field(ge=1)] | None = 2
    """Keep this many most recent checkpoints; None keeps all."""
    weights_only: bool = False
    """Save the model only (no optimizer, sampler or RNG state: such a checkpoint cannot resume exactly)."""
    resume: str = "never"
    """``never``, ``auto`` (latest complete checkpoint of the run directory), or a run/checkpoint path."""
    on_interrupt: bool = True
    """Write a checkpoint when the run is interrupted (Ctrl-C / SIGTERM)."""


class StageConfig(Section):
    kind: Literal["sft", "rl"]
    """``sft``: supervised steps on prompt + reference completion (loss on response tokens only);
    ``rl``: the sample -> score -> learn loop."""
    steps: Annotated[int, Field(ge=1)]
    """Learner steps in this stage."""
    name: str | None = None
    """Label in logs, metrics and evaluation keys (``before_<name>``); defaults to ``<kind><n>``, n
    counting the stages of that kind from 1 (SFT then RL: ``sft1``, ``rl1``)."""
    lr: NonNegative | None = None
    """Peak learning rate of this stage; None uses ``learner.lr``. 0 freezes the policy while
    everything else runs (generation, rewards, learner passes, weight syncs): a control run."""
    batch_size: Annotated[int, Field(ge=1)] = 64
    """SFT only: examples per step (RL steps use rollout.prompts_per_step x group_size)."""


def _default_stages() -> list[StageConfig]:
    return [StageConfig(kind="rl", steps=100)]


class RunConfig(Section):
    """The whole run. Each actor receives only its own section."""

    name: str = "rlft"
    """Run name, used for the run directory and the loggers."""
    seed: int = 0
    """Global seed for Python, NumPy, torch, data order and sampling."""
    plugins: list[str] = []
    """Modules or .py files to import first; they may register advantages, losses and more."""
    model: ModelConfig = ModelConfig()
    """The policy model."""
    data: DataConfig = DataConfig()
    """Prompt datasets."""
    rollout: RolloutConfig = RolloutConfig()
    """Generation by the rollout workers."""
    reward: RewardConfig = RewardConfig()
    """Reward functions and reward workers."""
    algo: AlgoConfig = AlgoConfig()
    """Advantage estimator, policy loss, aggregation, KL."""
    learner: LearnerConfig = LearnerConfig()
    """Optimisation on the learner group."""
    critic: CriticConfig | None = None
    """PPO's value model; None (default) runs critic-free (GRPO-family) RL."""
    curriculum: CurriculumConfig = CurriculumConfig()
    """Prompt sampling."""
    logging: LoggingConfig = LoggingConfig()
    """Metrics, dashboards and the run directory."""
    cluster: ClusterConfig = ClusterConfig()
    """Ray cluster and per-role resources."""
    checkpoint: CheckpointConfig = CheckpointConfig()
    """Checkpointing and resume."""
    stages: list[StageConfig] = Field(default_factory=_default_stages, min_length=1)
    """The run as a list of stages, e.g. SFT warm-up then RL; default: one RL stage of 100 steps."""
    evaluation: EvalConfig = EvalConfig()
    """Held-out evaluation: greedy accuracy and pass@k."""

    @model_validator(mode="before")
    @classmethod
    def _import_plugins(cls, data: Any, info: ValidationInfo) -> Any:
        """Import the plugins first (they register names the rest is checked against); file paths
        become absolute, so every process that reads this config finds the same files."""
        if isinstance(data, dict) and data.get("plugins"):
            base_dir = (info.context or {}).get("base_dir")
            specs = [resolve_plugin(str(spec), base_dir) for spec in data["plugins"]]
            for spec in specs:
                import_plugin(spec)
            data = {**data, "plugins": specs}
        return data

    @model_validator(mode="after")
    def _correct_names_a_reward(self) -> RunConfig:
        """``evaluation.correct.reward`` is one of the run's rewards (by its name in metrics)."""
        check_correct(self.evaluation.correct, [f.key for f in self.reward.functions], self.data.train_path)
        return self

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        estimator = self.algo.advantage.name
        if self.critic is None and ADVANTAGES.meta(estimator).get("needs_groups") and self.rollout.group_size < 2:
            raise ValueError(
                f"rollout.group_size must be >= 2 for the group-relative estimator '{estimator}', "
                f"got {self.rollout.group_size}"
            )
        batch = self.rollout.prompts_per_step * self.rollout.group_size
        needed = self.learner.mini_batches * self.learner.num_ranks
        if batch < needed:
            raise ValueError(
                f"a step's batch of {batch} completions (rollout.prompts_per_step x group_size) cannot "
                f"fill learner.mini_batches x num_ranks = {needed} shards"
            )
        if self.cluster.colocate and self.rollout.num_workers > self.learner.num_ranks:
            raise ValueError(
                f"cluster.colocate runs each rollout worker in a learner rank's bundle: "
                f"rollout.num_workers ({self.rollout.num_workers}) must be <= learner.num_ranks "
                f"({self.learner.num_ranks})"
            )
        if self.critic is not None and "advantage" in self.algo.model_fields_set:
            raise ValueError(
                "with a critic, advantages come from GAE over the critic's values (critic.gamma, "
                "critic.lam): remove algo.advantage"
            )
        if self.critic is None and self.algo.kl.placement == "reward" and self.algo.kl.coef > 0:
            raise ValueError("algo.kl.placement 'reward' puts the KL into PPO's token rewards: it needs a critic")
        if self.rollout.max_staleness > 0 and self.algo.dynamic_sampling.enabled:
            raise ValueError(
                "algo.dynamic_sampling refills a step's batch with extra rounds, which the asynchronous "
                "pipeline (rollout.max_staleness > 0) does not do: use algo.filter_zero_variance instead"
            )
        if self.rollout.max_staleness > 0 and self.cluster.colocate:
            raise ValueError(
                "cluster.colocate time-shares each GPU between a learner rank and an engine, so nothing can "
                "overlap: set rollout.max_staleness to 0"
            )
        if self.cluster.colocate and (self.cluster.rollout.gpus > 0 or self.cluster.learner.gpus > 1
                                      or self.rollout.tensor_parallel_size > 1):
            raise ValueError(
                "cluster.colocate shares each learner rank's GPU with one engine: set cluster.learner.gpus "
                "to 1 (or 0 on CPU), leave cluster.rollout.gpus unset and rollout.tensor_parallel_size at 1"
            )
        return self
