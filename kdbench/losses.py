"""Distillation losses as pure functions, equal to the standard CIFAR-100 benchmark code.

Normalisations and reductions follow CRD's RepDistiller (`distiller_zoo/`) and DKD's mdistiller
(`distillers/DKD.py`), so numbers are comparable with theirs. No state, no weights beyond each loss's own
internal ones: methods multiply these by their paper's coefficient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. 2015: T² · KL(teacher_T ‖ student_T), summed over classes, averaged over the batch."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_s, p_t, reduction="batchmean") * temperature**2


def hint_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """FitNet (Romero et al. 2015): mean squared error between the regressed student hint and the teacher's."""
    return F.mse_loss(student_feat, teacher_feat)


def attention_map(feat: torch.Tensor, p: int = 2) -> torch.Tensor:
    """Zagoruyko & Komodakis 2017: channel mean of |f|^p, flattened and L2-normalised per sample."""
    return F.normalize(feat.pow(p).mean(1).flatten(1))


def attention_transfer_loss(
    student_feat: torch.Tensor, teacher_feat: torch.Tensor, p: int = 2
) -> torch.Tensor:
    """AT for one feature pair: the larger map is average-pooled to the smaller; mean squared difference."""
    hs, ht = student_feat.shape[2], teacher_feat.shape[2]
    if hs > ht:
        student_feat = F.adaptive_avg_pool2d(student_feat, (ht, ht))
    elif hs < ht:
        teacher_feat = F.adaptive_avg_pool2d(teacher_feat, (hs, hs))
    return (attention_map(student_feat, p) - attention_map(teacher_feat, p)).pow(2).mean()


def similarity_preserving_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Tung & Mori 2019: squared Frobenius distance of the row-normalised batch Gram matrices, over b²."""
    b = student_feat.shape[0]
    g_s = F.normalize(student_feat.reshape(b, -1) @ student_feat.reshape(b, -1).t())
    g_t = F.normalize(teacher_feat.reshape(b, -1) @ teacher_feat.reshape(b, -1).t())
    return (g_t - g_s).pow(2).sum() / (b * b)


def pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distance matrix with a zero diagonal (RepDistiller's RKD `pdist`, squared=False)."""
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def _normalised_distances(e: torch.Tensor) -> torch.Tensor:
    d = pairwise_distances(e)
    return d / d[d > 0].mean()


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


def rkd_loss(
    student_emb: torch.Tensor,
    teacher_emb: torch.Tensor,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
) -> torch.Tensor:
    """Park et al. 2019: Huber loss between mean-normalised pairwise distances, plus between the cosines of
    the angles every triplet forms; weights 25 and 50 as in the paper and RepDistiller."""
    s, t = student_emb.flatten(1), teacher_emb.flatten(1).detach()
    loss_d = F.smooth_l1_loss(_normalised_distances(s), _normalised_distances(t))
    loss_a = F.smooth_l1_loss(_angles(s), _angles(t))
    return distance_weight * loss_d + angle_weight * loss_a


def _cosine_affinity(e: torch.Tensor, eps: float) -> torch.Tensor:
    e = e / (e.norm(dim=1, keepdim=True) + eps)
    e = torch.nan_to_num(e, nan=0.0)
    sim = (e @ e.t() + 1.0) / 2.0
    return sim / sim.sum(dim=1, keepdim=True)


def pkt_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Passalis & Tefas 2018: KL between the conditional probability distributions of cosine affinities."""
    p_s = _cosine_affinity(student_emb.flatten(1), eps)
    p_t = _cosine_affinity(teacher_emb.flatten(1), eps)
    return torch.mean(p_t * torch.log((p_t + eps) / (p_s + eps)))


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    """Zhao et al. 2022: alpha · TCKD (binary target-vs-rest KL) + beta · NCKD (KL among non-target classes),
    each T²-scaled and averaged over the batch, as in mdistiller's DKD."""
    gt = F.one_hot(target, student_logits.shape[1]).bool()
    p_s = F.softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits / temperature, dim=1)

    def binary(p: torch.Tensor) -> torch.Tensor:
        return torch.stack([(p * gt).sum(1), (p * ~gt).sum(1)], dim=1)

    scale = temperature**2 / target.shape[0]
    tckd = F.kl_div(torch.log(binary(p_s)), binary(p_t), reduction="sum") * scale
    # mdistiller masks the target class by subtracting 1000 from its logit before the softmax
    log_q_s = F.log_softmax(student_logits / temperature - 1000.0 * gt, dim=1)
    q_t = F.softmax(teacher_logits / temperature - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_q_s, q_t, reduction="sum") * scale
    return alpha * tckd + beta * nckd


def irg_edges(feat: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """IRG edges (Liu et al. 2019): squared Euclidean distances between the batch's instances, zero diagonal,
    divided by the largest, as in the Caffe reference code reproduced by Knowledge-Distillation-Zoo."""
    e = feat.flatten(1)
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * e @ e.t()).clamp(min=eps)
    d = d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))
    return d / d.max().clamp(min=eps)


def irg_transformation(earlier: torch.Tensor, later: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """IRG transformation between two feature maps of a network: per instance, the squared distance between
    them after average-pooling both to their common (channels, height, width), divided by the largest.

    Knowledge-Distillation-Zoo pools the larger spatial map and averages adjacent channel pairs of the wider
    one; adaptive pooling over (C, H, W) does the same for 2x widths and generalises to any pair."""
    size = [min(a, b) for a, b in zip(earlier.shape[1:], later.shape[1:], strict=True)]
    a = F.adaptive_avg_pool3d(earlier.unsqueeze(1), size).flatten(1)
    b = F.adaptive_avg_pool3d(later.unsqueeze(1), size).flatten(1)
    d = (a - b).pow(2).sum(dim=1).clamp(min=eps)
    return d / d.max()


def irg_loss(
    student_layers: list[torch.Tensor],
    teacher_layers: list[torch.Tensor],
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    vertex_weight: float = 0.1,
    edge_weight: float = 5.0,
    transform_weight: float = 5.0,
) -> torch.Tensor:
    """Instance Relationship Graph loss (Liu et al. 2019): MSE between the logits (vertices), the mean over
    `layers` of the MSE between edge matrices, and the MSE between the IRG transformations of consecutive
    4-D feature maps in `layers`. Weights 0.1 / 5 / 5 as Knowledge-Distillation-Zoo's IRG defaults."""
    vertex = F.mse_loss(student_logits, teacher_logits)
    pairs = list(zip(student_layers, teacher_layers, strict=True))
    edge = sum(F.mse_loss(irg_edges(s), irg_edges(t)) for s, t in pairs) / len(pairs)
    maps = [(s, t) for s, t in pairs if s.dim() == 4 and t.dim() == 4]
    transform = sum(
        F.mse_loss(irg_transformation(s1, s2), irg_transformation(t1, t2))
        for (s1, t1), (s2, t2) in zip(maps, maps[1:], strict=False)
    )
    return vertex_weight * vertex + edge_weight * edge + transform_weight * transform


def _row_pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of each row of `a` with the same row of `b` (DIST's `pearson_correlation`)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    """Huang et al. 2022 (DIST): T² · (beta · inter-class + gamma · intra-class relation loss), each one minus the
    mean Pearson correlation of the softened probabilities, per sample (rows) and per class (columns). Correlation
    rather than KL lets a student match a much stronger teacher's ranking without matching its exact values."""
    p_s = F.softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits / temperature, dim=1)
    inter = 1 - _row_pearson(p_s, p_t).mean()
    intra = 1 - _row_pearson(p_s.t(), p_t.t()).mean()
    return temperature**2 * (beta * inter + gamma * intra)


def standardize_logits(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Sun et al. 2024: per-sample Z-score of the logits, (z - mean) / (eps + std) with the unbiased std, as the
    official logit-standardization code's `normalize`."""
    return (logits - logits.mean(dim=1, keepdim=True)) / (eps + logits.std(dim=1, keepdim=True))


def lskd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0
) -> torch.Tensor:
    """Logit-standardised KD: Hinton's T²-scaled KL between the Z-scored logits, so the student matches the
    teacher's logit relations, not their range or spread; `temperature` is the paper's base temperature."""
    return kd_loss(standardize_logits(student_logits), standardize_logits(teacher_logits), temperature)


def _gram_consistency(p_s: torch.Tensor, p_t: torch.Tensor, dim: int) -> torch.Tensor:
    """Squared Frobenius distance between the Gram matrices of the probabilities over `dim` (0: classes x classes,
    1: samples x samples), divided by that Gram matrix's side, as MLKD's `cc_loss` / `bc_loss`."""
    g_s = p_s.t() @ p_s if dim == 0 else p_s @ p_s.t()
    g_t = p_t.t() @ p_t if dim == 0 else p_t @ p_t.t()
    return (g_t - g_s).pow(2).sum() / g_s.shape[0]


def mlkd_losses(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperatures: tuple[float, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Jin et al. 2023 (MLKD) on one view: the instance-level (T²-scaled KL), batch-level (sample-similarity
    Gram) and class-level (class-correlation Gram) alignments, each summed over `temperatures`."""
    instance = batch = klass = student_logits.new_zeros(())
    for t in temperatures:
        p_s = F.softmax(student_logits / t, dim=1)
        p_t = F.softmax(teacher_logits / t, dim=1)
        instance = instance + kd_loss(student_logits, teacher_logits, t)
        batch = batch + _gram_consistency(p_s, p_t, dim=1)
        klass = klass + _gram_consistency(p_s, p_t, dim=0)
    return instance, batch, klass


def nkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float = 1.0,
    gamma: float = 1.5,
) -> torch.Tensor:
    """Yang et al. 2023 (NKD): -t_gt · log s_gt (the teacher's target probability weights the student's target
    log-probability) plus gamma · T² · the cross-entropy between the teacher's and the student's non-target
    distributions, each renormalised over the non-target classes, as the official cls_KD NKDLoss."""
    n, c = student_logits.shape
    gt = F.one_hot(target, c).bool()
    s_gt = F.log_softmax(student_logits, dim=1)[gt]
    t_gt = F.softmax(teacher_logits, dim=1)[gt].detach()
    target_part = -(t_gt * s_gt).mean()
    s_non = F.log_softmax(student_logits[~gt].reshape(n, c - 1) / temperature, dim=1)
    t_non = F.softmax(teacher_logits[~gt].reshape(n, c - 1) / temperature, dim=1)
    non_target = -(t_non * s_non).sum(dim=1).mean()
    return target_part + gamma * temperature**2 * non_target
