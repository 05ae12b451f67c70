"""Graph-based distillation: the student matches a graph the teacher builds over the instances of a batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.data.loader import Batch
from kdbench.losses import irg_loss
from kdbench.methods.base import Method, MethodInfo, register_method


@register_method
class IRG(Method):
    """Instance Relationship Graph. Vertices are the instances of a batch; the student mimics

    - the vertices: its logits against the teacher's (MSE);
    - the edges: the max-normalised squared-distance matrices over the batch at the last two stages and at the
      pooled embedding (MSE, averaged over the three graphs);
    - the transformation: how far each instance moves from the second-last stage to the last (MSE).

    The layers, normalisation and weights are those of Knowledge-Distillation-Zoo's CIFAR IRG (`kd_losses/irg.py`,
    fed [rb2, rb3, feat, out] of a CIFAR ResNet), a reproduction of the authors' Caffe code.
    """

    info = MethodInfo(
        name="irg",
        technique="Graph-Based Distillation",
        scheme="offline",
        knowledge="graph (instance vertices, distance edges, layer-to-layer transformation)",
        reference="Liu et al. 2019, Knowledge Distillation via Instance Relationship Graph",
        summary="Cross-entropy plus MSE between the teacher's and student's instance graphs: logits as "
        "vertices, normalised distance matrices at three layers as edges, and the stage-to-stage transformation.",
    )
    defaults = {
        "ce_weight": 1.0,  # Knowledge-Distillation-Zoo train_kd.py: cross-entropy + lambda_kd * IRG
        "irg_weight": 1.0,  # Knowledge-Distillation-Zoo IRG script: --lambda_kd 1.0
        "vertex_weight": 0.1,  # Knowledge-Distillation-Zoo --w_irg_vert 0.1
        "edge_weight": 5.0,  # Knowledge-Distillation-Zoo --w_irg_edge 5.0
        "transform_weight": 5.0,  # Knowledge-Distillation-Zoo --w_irg_tran 5.0
    }

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.student_outputs(batch.x)
        teacher = self.teacher_outputs(batch, features=True)
        student_layers = [*out.stages[-2:], out.embedding]
        teacher_layers = [*teacher.stages[-2:], teacher.embedding]
        irg = irg_loss(
            student_layers,
            teacher_layers,
            out.logits,
            teacher.logits,
            self.hp["vertex_weight"],
            self.hp["edge_weight"],
            self.hp["transform_weight"],
        )
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(out.logits, batch.y),
            "irg": self.hp["irg_weight"] * irg,
        }
