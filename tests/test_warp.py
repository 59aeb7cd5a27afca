"""The warp primitives the mesh effects run on every frame, against the plain computations they
replace: the spline field through all its columns, upsampled displacements plus the identity map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facecast.characters.library import CharacterLibrary
from facecast.effects import animate_mesh as am
from facecast.effects import warp

ASSETS = Path(__file__).resolve().parents[1] / "src" / "facecast" / "assets" / "characters"


@pytest.fixture(scope="module")
def rig() -> am.MeshRig:
    library = CharacterLibrary(ASSETS)
    library.load_all()
    character = library.active
    assert character is not None
    return am.MeshRig(character.image, character.matte, character.landmarks, 512, 512)


def _full_field(rig: am.MeshRig, params: am.RigParams) -> np.ndarray:
    """The spline field through every column of the basis, from the targets as such."""
    lm_t, ring_t = rig.targets(params)
    disp = np.empty((rig.n_face + rig.n_ring, 2), np.float32)
    disp[: rig.n_face] = lm_t[rig.face_idx] - rig.landmarks[rig.face_idx, :2]
    disp[rig.n_face :] = (ring_t - rig.ring[:, :2]) * rig.ring_weight
    return rig.tps.field(disp)


@pytest.mark.parametrize("expression", ["none", "mouth and brows", "anywhere"])
def test_the_rigs_split_field_is_the_full_spline_field(rig, expression):
    """Head motion mixed from precomputed fields plus the expressive columns: the same field as the
    whole basis gives, for any pose, open eyes, a dropped jaw, and an expression anywhere (the
    columns outside the expressive set then go through the full product)."""
    rng = np.random.default_rng(3)
    for _ in range(4):
        expr = None
        if expression != "none":
            expr = np.zeros((478, 3))
            rows = am.MOUTH_REGION + am.BROW_REGION if expression == "mouth and brows" else list(range(478))
            expr[rows] = rng.normal(0, 4, (len(rows), 3))
        params = am.RigParams(
            pitch=rng.uniform(-15, 15),
            yaw=rng.uniform(-30, 30),
            roll=rng.uniform(-20, 20),
            shift=(rng.uniform(-40, 40), rng.uniform(-40, 40)),
            scale=rng.uniform(0.85, 1.2),
            eyes=(rng.uniform(0.0, 1.3), rng.uniform(0.0, 1.3)),
            mouth=rng.uniform(0, 0.5),
            expression=expr,
        )
        split, _ = rig.forward_field(params)
        full = _full_field(rig, params)
        assert np.abs(split - full).max() < 1e-3  # px; the maps are read at 1/32 px
        assert np.abs(full).max() > 5  # and the head did move


@pytest.mark.parametrize("box", [(0, 0, 512, 512, 8), (37, 11, 301, 197, 9.5), (0, 0, 140, 100, 8)])
def test_positions_upsample_as_displacements_plus_identity_up_to_the_edges(box):
    x, y, width, height, step = box
    grid = warp.Grid.covering(x, y, width, height, step)
    rng = np.random.default_rng(0)
    disp = rng.normal(0, 3, (grid.rows, grid.cols, 2)).astype(np.float32)
    want = warp.upsample(disp, width, height) + warp.identity_map(width, height, x, y)
    got = warp.PositionUpsampler(grid, width, height, x, y)(grid.points() + disp)
    assert np.abs(got - want).max() < 1e-3
    # resize alone repeats the edge sample in the outer half cell: the correction is needed there
    plain = warp.upsample(grid.points() + disp, width, height)
    assert np.abs(plain[:, 0] - want[:, 0]).max() > 1.0


def _invert_reference(grid: warp.Grid, disp: np.ndarray, targets: np.ndarray, iterations: int = 3) -> np.ndarray:
    """The Newton inversion written plainly: np.gradient, float64, no packing or in-place steps."""
    d_dy, d_dx = np.gradient(disp.astype(np.float64), axis=(0, 1))
    d_dx, d_dy = d_dx / grid.sx, d_dy / grid.sy

    def sample(field: np.ndarray, at: np.ndarray) -> np.ndarray:
        return grid.sample(field.astype(np.float32), at.astype(np.float32)).astype(np.float64)

    x = targets - sample(disp, targets)
    for _ in range(iterations):
        d, jx, jy = sample(disp, x), sample(d_dx, x), sample(d_dy, x)
        r = x + d - targets
        a, b, c, e = jx[..., 0] + 1, jy[..., 0], jx[..., 1], jy[..., 1] + 1
        det = a * e - b * c
        fold = det <= 0.05
        det = np.where(fold, 1.0, det)
        step = np.stack([(e * r[..., 0] - b * r[..., 1]) / det, (a * r[..., 1] - c * r[..., 0]) / det], -1)
        step[fold] = r[fold]
        cap = 3.0 * max(grid.sx, grid.sy)
        x = x - np.clip(step, -cap, cap)
    return x


def test_the_backward_map_is_the_plain_newton_inversion(rig):
    """For a turned, nodding head with a dropped jaw (the lips stretch most): the same backward map as
    the plain float64 Newton steps, and x + d(x) = y at most grid points."""
    params = am.RigParams(pitch=10, yaw=-25, roll=5, mouth=0.4, eyes=(0.5, 1.2))
    forward = _full_field(rig, params)
    x = warp.invert_displacement(rig.grid, forward, rig.grid_points)
    reference = _invert_reference(rig.grid, forward, rig.grid_points.astype(np.float64))
    assert np.percentile(np.abs(x - reference), 99) < 1e-3
    residual = np.abs(x + rig.grid.sample(forward, x) - rig.grid_points).max(-1)
    assert np.median(residual) < 0.01 and np.percentile(residual, 95) < 0.5


def test_grid_points_through_an_affine_map_are_built_from_one_row_and_one_column():
    grid = warp.Grid.covering(37.0, 11.0, 301, 197, 9.5)
    m = np.array([[0.93, -0.21, 14.5], [0.19, 1.07, -8.25]])
    want = warp.apply_affine(m, grid.points().reshape(-1, 2).astype(np.float64)).reshape(grid.rows, grid.cols, 2)
    got = grid.mapped(m)
    assert got.dtype == np.float32 and got.shape == (grid.rows, grid.cols, 2)
    assert np.abs(got - want).max() < 1e-4
