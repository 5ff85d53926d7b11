"""The any-order autoregressive network behind ``deep`` and ``dp-deep``, and its training loops.

Every token of every column has an embedding. To predict column ``j``, the network adds up the embeddings of
the tokens of the columns *visible* to it (the ones before ``j`` in an order) and an embedding of ``j``, applies
a ReLU (optionally shared residual blocks), and a linear head per column gives logits over ``j``'s tokens. One
(columns x columns) product per row computes this for every target at once. Training draws an order per row
(Uria, Murray and Larochelle, "A Deep and Tractable Density Estimator", ICML 2014; the flexible-order mode of
Tiwald et al., "TabularARGN", arXiv:2501.12012): fully random at first, then mostly the sampling order with a
random set of columns moved to the front (:func:`conditional_ranks`), so sampling in that order is accurate
and any subset of columns can still come first: that is what makes conditioning exact.

Every layer is an ``nn.Embedding``, ``nn.Linear`` or ``nn.LayerNorm``, so opacus computes per-sample gradients
for DP-SGD.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from privsynth.privacy.dp_sgd import release_opacus, secret_generator
from privsynth.progress import report


class AnyOrderNet(nn.Module):
    """Logits of each column given any subset of the others (see the module docstring).

    The first hidden layer for target column ``j`` is the ReLU of the sum of the embeddings (of width ``hidden``)
    of the visible columns' tokens plus an embedding of ``j`` itself: a linear layer on the masked one-hot
    inputs, computed for all targets at once with one (columns x columns) product per row. ``depth - 1`` residual
    blocks shared by all targets follow, then a linear head per column. (A layer norm after the sum, with GELU,
    fitted the validation rows as well but left 1-way marginals off by up to 0.05 on nassCDS; without it they
    are within 0.013.)
    """

    offsets: torch.Tensor
    columns: torch.Tensor

    def __init__(self, sizes: list[int], hidden: int, depth: int, dropout: float) -> None:
        super().__init__()
        self.sizes = list(sizes)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.register_buffer("offsets", torch.as_tensor(offsets, dtype=torch.long), persistent=False)
        self.register_buffer("columns", torch.arange(len(sizes)), persistent=False)
        self.tokens = nn.Embedding(int(sum(sizes)), hidden)
        self.targets = nn.Embedding(len(sizes), hidden)
        self.blocks = nn.ModuleList(_Block(hidden, dropout) for _ in range(depth - 1))
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleList(nn.Linear(hidden, size) for size in sizes)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings of every column, shape (rows, columns, hidden)."""
        return self.tokens(tokens + self.offsets)  # type: ignore[no-any-return]

    def hidden(self, embedded: torch.Tensor, visible: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Hidden states (rows, targets, hidden) of the ``targets`` (column indices) given the 0/1 mask
        ``visible`` (rows, targets, columns) of the columns each may see."""
        h = torch.relu(torch.bmm(visible, embedded) + self.targets(targets.expand(embedded.shape[0], -1)))
        for block in self.blocks:
            h = block(h)
        return self.dropout(h)  # type: ignore[no-any-return]

    def logits(self, embedded: torch.Tensor, visible: torch.Tensor, column: int) -> torch.Tensor:
        """Logits over ``column``'s tokens given the (rows, columns) 0/1 mask of visible columns."""
        h = self.hidden(embedded, visible.unsqueeze(1), self.columns[column : column + 1])
        return self.heads[column](h[:, 0])  # type: ignore[no-any-return]

    def forward(self, tokens: torch.Tensor, ranks: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Per-row negative log-likelihood of ``tokens`` when columns come in the order given by ``ranks``.

        ``ranks[r, i]`` is column ``i``'s position in row ``r``'s order; column ``j`` sees the columns of lower
        rank. Returns a (rows,) tensor, the sum over columns (over the ``targets`` column indices when given: the
        others are only seen, never predicted) of the cross-entropy.
        """
        embedded = self.embed(tokens)
        visible = (ranks.unsqueeze(1) < ranks.unsqueeze(2)).to(embedded.dtype)
        loss = torch.zeros(tokens.shape[0], dtype=embedded.dtype)
        if targets is not None:
            h = self.hidden(embedded, visible[:, targets], targets)
            for j, state in zip(targets.tolist(), torch.unbind(h, dim=1), strict=True):
                loss = loss + nn.functional.cross_entropy(self.heads[j](state), tokens[:, j], reduction="none")
            return loss
        h = self.hidden(embedded, visible, self.columns)
        for j, (head, state) in enumerate(zip(self.heads, torch.unbind(h, dim=1), strict=True)):
            loss = loss + nn.functional.cross_entropy(head(state), tokens[:, j], reduction="none")
        return loss


class _Block(nn.Module):
    """A pre-norm residual MLP block, shared by all target columns."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.linear = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.linear(self.dropout(torch.relu(self.norm(h))))  # type: ignore[no-any-return]


def random_ranks(rows: int, columns: int, generator: torch.Generator) -> torch.Tensor:
    """A random column order per row, as ranks (rows, columns)."""
    return torch.argsort(torch.rand(rows, columns, generator=generator), dim=1).argsort(dim=1)


def order_ranks(order: list[int], rows: int) -> torch.Tensor:
    """The ranks of one fixed ``order`` (a list of column indices), repeated for ``rows`` rows."""
    ranks = torch.empty(len(order), dtype=torch.long)
    ranks[torch.tensor(order)] = torch.arange(len(order))
    return ranks.expand(rows, -1)


def conditional_ranks(order: list[int], rows: int, generator: torch.Generator) -> torch.Tensor:
    """Orders as sampling uses them: a random subset of columns first (the conditions), then ``order``.

    Half the rows take no subset (``order`` itself: unconditional sampling); the others a subset of uniform
    size from 1 to all columns, in random order (all columns: a fully random order). Training on these puts
    the network's effort where sampling needs it, while any subset can still be conditioned on.
    """
    columns = len(order)
    size = torch.randint(1, columns + 1, (rows, 1), generator=generator)
    size = torch.where(torch.rand(rows, 1, generator=generator) < 0.5, 0, size)
    priority = torch.rand(rows, columns, generator=generator)
    chosen = priority.argsort(dim=1).argsort(dim=1) < size
    position = order_ranks(order, 1).to(priority.dtype) / columns
    key = torch.where(chosen, priority - 1.0, position)
    return key.argsort(dim=1).argsort(dim=1)


def context_first(ranks: torch.Tensor, context: Sequence[int]) -> torch.Tensor:
    """``ranks`` with the ``context`` columns (always given when sampling) before every other column."""
    if not context:
        return ranks
    ranks = ranks.clone(memory_format=torch.contiguous_format)
    ranks[:, list(context)] = -1
    return ranks


def best_order(
    net: AnyOrderNet,
    validation: torch.Tensor,
    generator: torch.Generator,
    candidates: int,
    context: Sequence[int] = (),
    targets: torch.Tensor | None = None,
) -> list[int]:
    """The column order with the lowest validation loss among the given one and ``candidates`` random ones."""
    columns = validation.shape[1]
    orders = [list(range(columns))]
    for ranks in random_ranks(candidates, columns, generator):
        orders.append(torch.argsort(ranks).tolist())
    losses = [
        mean_nll(net, validation, context_first(order_ranks(order, validation.shape[0]), context), targets=targets)
        for order in orders
    ]
    return orders[int(np.argmin(losses))]


@dataclass
class History:
    """What training did: losses per epoch (nats per row) and why it stopped."""

    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    stopped: str = ""


def mean_nll(
    net: AnyOrderNet, tokens: torch.Tensor, ranks: torch.Tensor, batch: int = 4096, targets: torch.Tensor | None = None
) -> float:
    """Mean negative log-likelihood per row of ``tokens`` under ``ranks`` (no gradients, dropout off), summed over
    the ``targets`` columns when given."""
    net.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, tokens.shape[0], batch):
            total += float(net(tokens[start : start + batch], ranks[start : start + batch], targets).sum())
    return total / max(1, tokens.shape[0])


def fit_early_stopping(
    net: AnyOrderNet,
    train: torch.Tensor,
    validation: torch.Tensor,
    *,
    epochs: int,
    warmup: int,
    candidates: int,
    batch_size: int,
    learning_rate: float,
    patience: int,
    max_seconds: float | None,
    generator: torch.Generator,
    task: str = "train",
    context: Sequence[int] = (),
) -> tuple[History, list[int]]:
    """Adam with a cosine learning rate and early stopping on the validation loss; returns the sampling order too.

    The first ``warmup`` epochs train on fully random orders; the order that then fits the validation rows best
    (of the schema's and ``candidates`` random ones) becomes the sampling order, and the remaining epochs train
    on :func:`conditional_ranks` of it. The validation loss is measured on such orders (drawn once).

    When it has not improved for ``patience`` epochs (or the time limit nears), training does not stop at once:
    the learning rate first falls linearly to zero over ``patience`` more epochs. Stopping at a high learning
    rate leaves the output layers jittering around their optimum, and the sampled 1-way marginals were then off
    by up to 0.05 on nassCDS (within 0.006 after annealing). The weights of the best validation epoch are kept.
    Reports progress per epoch: validation loss and the time left at the current pace.

    ``context`` columns (indices) are always given when sampling: they come before the others in every order and
    are never predicted (no loss, no hidden state), which saves their share of the work.
    """
    optimizer = Adam(list(net.parameters()), learning_rate)
    columns = train.shape[1]
    order = list(range(columns))
    targets = torch.tensor([j for j in range(columns) if j not in set(context)]) if context else None
    val_ranks = context_first(random_ranks(validation.shape[0], columns, generator), context)
    history = History()
    best = math.inf
    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    start = time.perf_counter()
    annealing: tuple[int, float] | None = None  # (first epoch, learning rate before it) of the final decay
    last = epochs
    report(task, 0, epochs, "starting")
    for epoch in range(1, epochs + 1):
        if annealing is None:
            rate = learning_rate * (1 + math.cos(math.pi * (epoch - 1) / epochs)) / 2
        else:
            rate = annealing[1] * (1 - (epoch - annealing[0] + 1) / (patience + 1))
        for group in optimizer.param_groups:
            group["lr"] = rate
        net.train()
        shuffled = torch.randperm(train.shape[0], generator=generator)
        total = 0.0
        for first in range(0, train.shape[0], batch_size):
            rows = train[shuffled[first : first + batch_size]]
            if epoch <= warmup:
                ranks = random_ranks(rows.shape[0], columns, generator)
            else:
                ranks = conditional_ranks(order, rows.shape[0], generator)
            loss = net(rows, context_first(ranks, context), targets).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * rows.shape[0]
        history.train_loss.append(total / train.shape[0])
        if epoch == warmup:
            order = best_order(net, validation, generator, candidates, context, targets)
            val_ranks = context_first(conditional_ranks(order, validation.shape[0], generator), context)
        value = mean_nll(net, validation, val_ranks, targets=targets)
        history.validation_loss.append(value)
        if epoch >= warmup and value < best - 1e-4:
            best, history.best_epoch = value, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        elapsed = time.perf_counter() - start
        if annealing is None and epoch > warmup:
            stalled = epoch - history.best_epoch >= patience
            late = max_seconds is not None and elapsed + elapsed / epoch * (patience + 1) > max_seconds
            if stalled or late:
                annealing = (epoch + 1, rate)
                last = min(epochs, epoch + patience)
                why = f"validation loss did not improve for {patience} epochs" if stalled else "time limit"
                history.stopped = f"{why}; learning rate annealed over {last - epoch} more epochs"
        left = elapsed / epoch * (last - epoch)
        report(task, epoch, epochs, f"loss {value:.3f}, ~{left:.0f}s left")
        if epoch >= last:
            break
    if not history.stopped:
        history.stopped = f"epoch limit of {epochs}"
    if history.best_epoch == 0:  # the time limit came before the order was chosen
        order = best_order(net, validation, generator, candidates, context, targets)
    else:
        net.load_state_dict(best_state)
    net.eval()
    history.seconds = time.perf_counter() - start
    report(task, epochs, epochs, f"best validation loss {best:.3f} (epoch {history.best_epoch})")
    return history, order


class Adam:
    """Adam (Kingma and Ba, ICLR 2015) computed as ``torch.optim.Adam`` computes it on CPU at its defaults (betas 0.9
    and 0.999, eps 1e-8, per-parameter step counts, parameters without a gradient skipped): the same operations in
    the same order, so the same weights. Creating any ``torch.optim`` optimizer imports ``torch._dynamo``, which
    took 1.2 s of CPU: more than training a model of a few hundred rows (a parent table of related tables)."""

    def __init__(self, params: list[nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> None:
        self.params = params
        self.param_groups = [{"lr": lr}]
        self.betas = betas
        self.eps = 1e-8
        self.state: dict[int, tuple[torch.Tensor, torch.Tensor, list[int]]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        lr = self.param_groups[0]["lr"]
        for i, param in enumerate(self.params):
            grad = param.grad
            if grad is None:
                continue
            if i not in self.state:
                zeros = torch.zeros_like(param, memory_format=torch.preserve_format)
                self.state[i] = (zeros, zeros.clone(), [0])
            exp_avg, exp_avg_sq, count = self.state[i]
            count[0] += 1
            step = float(count[0])
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(self.eps)
            param.addcdiv_(exp_avg, denom, value=-(lr / (1 - beta1**step)))


def sample_tokens(
    net: AnyOrderNet,
    order: list[int],
    fixed: dict[int, np.ndarray],
    n: int,
    draw: Callable[[np.ndarray], np.ndarray],
    batch: int = 8192,
    allowed: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Tokens (n, columns) drawn column by column in ``order``; columns in ``fixed`` take the given tokens.

    ``draw`` turns a (rows, size) probability matrix into one token per row (it holds the random state).
    Fixed columns should come first in ``order``: later columns are drawn given them. ``allowed`` (a boolean
    per token of each column) leaves tokens out of the draw: the network's probabilities are renormalised over
    the others (post-processing).
    """
    columns = len(net.sizes)
    out = np.zeros((n, columns), dtype=np.int64)
    for column, given in fixed.items():
        out[:, column] = given
    net.eval()
    with torch.no_grad():
        for first in range(0, n, batch):
            rows = slice(first, min(n, first + batch))
            tokens = torch.from_numpy(out[rows])
            visible = torch.zeros(tokens.shape[0], columns)
            for column in order:
                if column not in fixed:
                    logits = net.logits(net.embed(tokens), visible, column)
                    probs = torch.softmax(logits.double(), dim=1).numpy()
                    if allowed is not None and not allowed[column].all():
                        probs = probs * allowed[column]
                        probs /= probs.sum(axis=1, keepdims=True)
                    tokens[:, column] = torch.from_numpy(draw(probs))
                visible[:, column] = 1.0
            out[rows] = tokens.numpy()
    return out


def poisson_steps(
    train: torch.Tensor, sample_rate: float, steps: int, secret: torch.Generator
) -> Iterator[torch.Tensor]:
    """One Poisson sample of the rows ``train`` holds per step: each row independently with ``sample_rate``."""
    for _ in range(steps):
        yield train[torch.rand(train.shape[0], generator=secret) < sample_rate]


def block_poisson_steps(
    draw: Callable[[float], torch.Tensor],
    sample_rate: float,
    steps: int,
    block_steps: int,
    secret: torch.Generator,
) -> Iterator[torch.Tensor]:
    """The same samples as :func:`poisson_steps`, for rows that stay in their engine: one engine query per block
    of ``block_steps`` steps instead of one per step, and only the rows some step of the block uses leave it.

    For a block of K steps, each row's inclusions are K independent Bernoulli(q) draws (q = ``sample_rate``). The
    engine keeps a row with the probability that any of them is 1, ``p = 1 - (1 - q)^K`` (``draw(p)``: a Poisson
    sample of the encoded rows, drawn by the engine, see :meth:`privsynth.data.source_base.Source.poisson_sample`);
    for each kept row this draws the pattern given that it is not all zeros: its first step J from
    ``P(J = j) = (1 - q)^(j-1) q / p`` (inverse CDF), then each later step of the block independently with q (a
    binomial count of them, at positions uniform among the later steps). The joint distribution of the K samples
    is therefore exactly that of K independent Poisson samples of rate q, the sampling the RDP accountant of
    :func:`fit_dp_sgd` assumes at ``sample_rate``; the pattern comes from ``secret`` (seeded by the operating
    system), the rows' selection from the engine's own generator, and neither from the user's seed.
    """
    log_miss = math.log1p(-sample_rate)  # sample_rate < 1: noisy_sample_rate keeps it at most 1/2
    for start in range(0, steps, block_steps):
        k = min(block_steps, steps - start)
        keep = -math.expm1(k * log_miss)
        rows = draw(keep)
        m = rows.shape[0]
        u = torch.rand(m, generator=secret, dtype=torch.float64)
        first = torch.ceil(torch.log1p(-u * keep) / log_miss).clamp(1, k).long() - 1
        rate = torch.full((m,), sample_rate, dtype=torch.float64)
        later = torch.binomial((k - 1 - first).double(), rate, generator=secret).long()
        row_ids, step_ids = [torch.arange(m)], [first]
        for row in torch.nonzero(later).flatten().tolist():
            after = int(first[row]) + 1
            chosen = torch.randperm(k - after, generator=secret)[: int(later[row])] + after
            row_ids.append(torch.full((len(chosen),), row, dtype=torch.long))
            step_ids.append(chosen)
        rows_of, steps_of = torch.cat(row_ids), torch.cat(step_ids)
        order = torch.argsort(steps_of, stable=True)
        rows_of = rows_of[order]
        ends = torch.cumsum(torch.bincount(steps_of, minlength=k), 0).tolist()
        begin = 0
        for end in ends:
            yield rows[rows_of[begin:end]]
            begin = end


def fit_dp_sgd(
    net: AnyOrderNet,
    train: torch.Tensor | Callable[[torch.Generator], Iterator[torch.Tensor]],
    *,
    sample_rate: float,
    steps: int,
    noise_multiplier: float,
    max_grad_norm: float,
    learning_rate: float,
    expected_batch_size: int,
    order: list[int],
    task: str = "train",
) -> None:
    """DP-SGD (Abadi et al., CCS 2016) with Adam, as opacus runs it: per-row gradients clipped to
    ``max_grad_norm``, Gaussian noise of ``noise_multiplier * max_grad_norm`` on their sum, divided by the public
    ``expected_batch_size``; the learning rate follows a cosine from ``learning_rate`` to zero over the steps.

    Each step takes a Poisson sample of the rows (each row independently with ``sample_rate``), the sampling the RDP
    accountant assumes; an empty sample still takes a noise-only step. ``train`` holds the encoded rows
    (:func:`poisson_steps` samples them), or is a function of the secret generator that yields each step's sample
    (:func:`block_poisson_steps`, for rows drawn by their engine), which must be distributed the same way. The
    sampling, the noise and the training orders come from a generator seeded by the operating system, not by the
    user's seed: a known seed would make the sampling predictable to an attacker. The noise is drawn in opacus's
    ``secure_mode`` (each coordinate the scaled sum of four Gaussian draws, against attacks on the floating-point
    representation of a single draw; see :class:`privsynth.synth.deep.DPDeepSynthesizer` for what is left of that
    risk).

    Nothing computed from the private rows without noise leaves this function: progress is reported once per
    pass over the data as step counts only (no loss, which is computed from the rows; no time, which grows with
    the size of each Poisson sample and so with the row count). Orders are :func:`conditional_ranks` of the
    (public) sampling ``order``.
    """
    from opacus import GradSampleModule  # type: ignore[import-untyped]
    from opacus.optimizers import DPOptimizer  # type: ignore[import-untyped]

    secret = secret_generator()
    model = GradSampleModule(net, loss_reduction="mean")
    optimizer = DPOptimizer(
        torch.optim.Adam(net.parameters(), lr=learning_rate),
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected_batch_size,
        loss_reduction="mean",
        generator=secret,
        secure_mode=True,
    )
    batches = poisson_steps(train, sample_rate, steps, secret) if isinstance(train, torch.Tensor) else train(secret)
    per_epoch = max(1, round(1 / sample_rate))
    epochs = math.ceil(steps / per_epoch)
    report(task, 0, epochs, "starting")
    net.train()
    with warnings.catch_warnings():
        # opacus hooks the embeddings, whose integer inputs need no gradient; torch says so once per step
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        for step in range(1, steps + 1):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * (1 + math.cos(math.pi * (step - 1) / steps)) / 2
            rows = next(batches)
            nll = model(rows, conditional_ranks(order, rows.shape[0], secret))
            optimizer.zero_grad(set_to_none=True)
            nll.mean().backward()
            optimizer.step()
            if step % per_epoch == 0 or step == steps:
                report(task, math.ceil(step / per_epoch), epochs, f"step {step} of {steps}")
    release_opacus(model, net)
    net.eval()
