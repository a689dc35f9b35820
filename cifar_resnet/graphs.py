"""--step-graph on: the whole training step as one CUDA graph. passes.TrainStep (the batch gathered
from the device-resident split, crop, flip and normalisation, forward, loss, backward, the update
at the rate held in a device tensor, the running sums) is recorded once and then replayed, so a
step costs one launch instead of the hundreds of kernel launches that keep a GPU waiting on the
host for the small CIFAR ResNets. Only the batch's indices (copied into the graph's input) and
the rate (written into its tensor) change between replays; drops, warm-ups and cosine need no
new capture.

This module is the thin CUDA-only layer, below passes.py (which it does not import: ``step`` is
always a passes.TrainStep): the step it replays is the one every run takes on every device, which
the test suite checks on the CPU. The capture itself needs a GPU: where it fails
the run says so in one line and goes on with the step uncaptured, and its summary records which
it was (``step_graph``).
"""

from __future__ import annotations

from typing import Optional

import torch

from cifar_resnet.errors import one_line

# Eager steps on a side stream before the capture (as PyTorch's whole-network capture does): cuDNN's
# autotuning, the optimizer's momentum buffers and compiled kernels are made then, not recorded.
WARMUP_STEPS = 3


class CapturedStep:
    """A TrainStep replayed as one CUDA graph, after WARMUP_STEPS real steps that are not."""

    def __init__(self, step) -> None:
        self.step = step
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.index: Optional[torch.Tensor] = None  # the graph's input: the batch's indices
        self.warm_steps = 0
        self.side_stream = torch.cuda.Stream(step.loader.device)

    def __call__(self, index: torch.Tensor) -> None:
        if self.graph is None and self.warm_steps < WARMUP_STEPS:
            self.warm_up(index)
            return
        if self.graph is None and not self.capture(index):
            self.step(index)  # the capture failed (and said so): this step, and every later one, uncaptured
            return
        self.index.copy_(index)
        self.graph.replay()

    def warm_up(self, index: torch.Tensor) -> None:
        self.side_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side_stream):
            self.step(index)
        torch.cuda.current_stream().wait_stream(self.side_stream)
        self.warm_steps += 1

    def capture(self, index: torch.Tensor) -> bool:
        """Record one step on ``index``'s shape (recording runs nothing: the replay that follows does
        the step); False, after one line saying why, where CUDA or PyTorch refuses."""
        graph, self.index = torch.cuda.CUDAGraph(), index.clone()
        graph.register_generator_state(self.step.loader.augment_generator)  # each replay draws new crops and flips
        self.step.optimizer.zero_grad(set_to_none=True)  # the graph's backward makes the gradients, in its memory
        self.step.capturing = True
        try:
            with torch.cuda.graph(graph):
                self.step(self.index)
        except Exception as error:  # a kernel or a host read that cannot be recorded: the step still runs
            self.fall_back(one_line(error))
            return False
        finally:
            self.step.capturing = False
        self.graph = graph
        return True

    def fall_back(self, reason: str) -> None:
        self.step.graph, self.step.graph_mode = None, f"off (the capture failed: {reason})"
        print(f"note: the training step could not be captured as one CUDA graph ({reason}); it runs uncaptured",
              flush=True)


def capture_steps(step) -> None:
    """Have ``step`` replayed as one CUDA graph from its fourth call on, unless a graph would replay
    it wrongly: then it runs uncaptured, and says why in one line."""
    reason = uncapturable(step)
    if reason is not None:
        step.graph_mode = f"off ({reason})"
        print(f"note: --step-graph on: {reason}, so the training step runs uncaptured", flush=True)
        return
    step.graph, step.graph_mode = CapturedStep(step), "on"


def uncapturable(step) -> Optional[str]:
    """Why a graph of ``step`` would not replay it: host values that a capture would freeze."""
    if step.mixing is not None:
        return "MixUp/CutMix draw their lambda and box on the host each batch"
    if not isinstance(step.optimizer, torch.optim.SGD) or step.lr is None:
        # AdamW's and Adagrad's step counts, and a rate passed as a float, would be frozen at the capture
        return f"only fused SGD's update is captured, not {type(step.optimizer).__name__}'s"
    return None
