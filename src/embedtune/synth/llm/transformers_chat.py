"""Backend `transformers`: a local chat model, generating for many prompts in padded batches."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from embedtune.errors import EmbedtuneError
from embedtune.synth.llm.base import BACKENDS, ChatBackend, Generation, LLMConfig
from embedtune.weights import pick_device, resolve_model

KEPT_TAIL_TOKENS = 128  # an over-long message keeps this much of its end: the instruction


class TransformersConfig(LLMConfig):
    not_in_answer_key: ClassVar[frozenset[str]] = LLMConfig.not_in_answer_key | {
        "device",
        "kv_cache",
        "compile",
    }

    backend: Literal["transformers"]
    gguf_file: str | None
    quantization: Literal["none", "8bit", "4bit"]
    dtype: Literal["auto", "float32", "bfloat16", "float16"]
    device: Literal["auto", "cpu", "cuda"]
    max_input_tokens: int = Field(gt=0)
    chat_template: str | None  # Jinja template for a model whose tokenizer has none
    # static: the KV cache is allocated once per batch instead of grown (copied) every token
    kv_cache: Literal["static", "dynamic"]
    # torch.compile the decoding step (transformers does so with a static cache on CUDA unless
    # told not to); every new batch shape compiles again, so it pays only on long runs
    compile: bool


def ensure_chat_template(tokenizer, cfg: TransformersConfig) -> None:
    """Give a tokenizer without a chat template `llm.chat_template`; fail if there is none."""
    if tokenizer.chat_template:
        return
    if not cfg.chat_template:
        raise EmbedtuneError(
            f"llm.model={cfg.model}: the tokenizer has no chat template; "
            "set llm.chat_template to a Jinja chat template"
        )
    tokenizer.chat_template = cfg.chat_template


def model_kwargs(cfg: TransformersConfig, device: str) -> dict:
    """`from_pretrained` arguments for `llm.dtype` and `llm.quantization` (bitsandbytes).

    4-bit NF4 runs on a CPU too (bitsandbytes >= 0.48 has CPU kernels), slower than float32
    there: it is for running the recipe's settings anywhere, not for speed. 8-bit needs CUDA.
    """
    import torch

    if cfg.quantization == "8bit" and device != "cuda":
        raise EmbedtuneError(
            "llm.quantization=8bit needs a CUDA GPU (bitsandbytes), none found; use "
            "llm.quantization=4bit or none, or `dvc exp run -S experiment=cpu` for the CPU preset"
        )
    dtype = "auto" if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
    kwargs = {"dtype": torch.float32 if device == "cpu" and cfg.dtype == "auto" else dtype}
    if cfg.quantization == "4bit":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16 if device == "cuda" else kwargs["dtype"],
            bnb_4bit_use_double_quant=True,
        )
        if device == "cpu":
            kwargs["device_map"] = "cpu"  # bitsandbytes otherwise looks for a GPU
    elif cfg.quantization == "8bit":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    return kwargs


@BACKENDS.register("transformers")
class TransformersChat(ChatBackend):
    """Chat-template prompts in, completions out, through Hugging Face transformers."""

    Config = TransformersConfig
    cfg: TransformersConfig

    def __init__(self, cfg: TransformersConfig, seed: int):
        super().__init__(cfg, seed)
        self.model = None
        self.tokenizer = None

    def load(self) -> TransformersChat:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cfg = self.cfg
        device = pick_device(cfg.device, "llm.device")
        kwargs = model_kwargs(cfg, device)
        if cfg.quantization == "4bit" and device == "cpu":
            print("llm.quantization=4bit on a CPU: NF4 through bitsandbytes, slower than float32")
        path = resolve_model(cfg.model, "llm.model")
        extra = {"gguf_file": cfg.gguf_file} if cfg.gguf_file else {}
        self.tokenizer = AutoTokenizer.from_pretrained(path, **extra)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        ensure_chat_template(self.tokenizer, cfg)
        model = AutoModelForCausalLM.from_pretrained(path, **extra, **kwargs)
        if cfg.quantization == "none":
            model = model.to(device)
        self.model = model.eval()
        return self

    def _render(self, message: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def fit_prompt(self, message: str) -> str:
        """The rendered prompt within `llm.max_input_tokens`. An over-long message loses tokens
        from its middle (the chunk text), so the instruction at its end and the assistant turn
        that follows survive; cutting the rendered prompt's end would drop both."""
        limit = self.cfg.max_input_tokens
        rendered = self._render(message)
        over = self.count_tokens(rendered) - limit
        if over <= 0:
            return rendered
        ids = self.tokenizer(message, add_special_tokens=False)["input_ids"]
        decode = self.tokenizer.decode
        keep = len(ids) - over
        while over > 0:
            if keep < 2:
                raise EmbedtuneError(
                    f"llm.max_input_tokens={limit} leaves no room for the prompt; raise it"
                )
            tail = min(KEPT_TAIL_TOKENS, keep // 2)
            head, end = ids[: keep - tail], ids[len(ids) - tail :]
            rendered = self._render(f"{decode(head)} [...] {decode(end)}")
            over = self.count_tokens(rendered) - limit
            keep -= over + 1  # the cut can re-tokenize a little longer: shorten and try again
        return rendered

    def generate(self, messages: list[str]) -> list[Generation]:
        """Complete one batch of user messages."""
        import torch

        cfg = self.cfg
        enc = self.tokenizer(
            [self.fit_prompt(m) for m in messages],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(self.model.device)
        sampling = (
            {"do_sample": True, "temperature": cfg.temperature}
            if cfg.temperature > 0
            else {"do_sample": False}
        )
        torch.manual_seed(self.seed)
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=cfg.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                cache_implementation=cfg.kv_cache,
                disable_compile=not cfg.compile,
                **sampling,
            )
        new = out[:, enc["input_ids"].shape[1] :].cpu()
        counts = (new != self.tokenizer.pad_token_id).sum(dim=1).tolist()
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [Generation(t, n) for t, n in zip(texts, counts, strict=True)]
