"""Figures of the LMU memory, drawn from the pure NumPy functions of :mod:`keras_lmu.legendre`.

Needs matplotlib (``pip install "keras-lmu3[plots]"``), which is imported here, so
import this module only where matplotlib may be missing behind a check. The figures
are drawn on :class:`matplotlib.figure.Figure` objects, without ``pyplot``: saving
them neither needs nor changes matplotlib's interactive backend.

:func:`make_basis_figure` draws the figure of ``keras-lmu plot-basis``;
:func:`make_legendre_figure` draws the README's ``docs/legendre.png``
(``docs/make_figures.py``).
"""

from __future__ import annotations

import math
import os
import shutil

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from keras_lmu import legendre

#: Up to this order the basis and the impulse response are drawn as one curve per
#: dimension; above it, as heatmaps.
MAX_CURVES_ORDER = 10
#: Most steps of the impulse response drawn; longer responses are sampled with a stride.
MAX_RESPONSE_POINTS = 2000
#: The impulse response is drawn over this many windows, to show its decay after theta.
RESPONSE_WINDOWS = 1.5


def supported_formats() -> list[str]:
    """The file extensions (without the dot) that figures can be saved as here: those
    matplotlib writes, less ``pgf`` where the TeX program it runs for it is missing."""
    formats = set(Figure().canvas.get_supported_filetypes())
    if shutil.which(matplotlib.rcParams["pgf.texsystem"]) is None:
        formats.discard("pgf")
    return sorted(formats)


def smooth_signal(steps: int, seed: int = 0, cutoff: float = 0.03) -> np.ndarray:
    """White noise low-pass filtered in the frequency domain, scaled to peak 1."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(steps))
    frequencies = np.fft.rfftfreq(steps)
    spectrum[frequencies > cutoff] = 0.0
    signal = np.fft.irfft(spectrum, n=steps)
    return signal / np.max(np.abs(signal))


def run_memory(A_bar: np.ndarray, B_bar: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The memory states ``m_t = A_bar m_{t-1} + B_bar u_t`` from ``m_{-1} = 0``."""
    memory = np.zeros((len(u), len(B_bar)))
    state = np.zeros(len(B_bar))
    for t, value in enumerate(u):
        state = A_bar @ state + B_bar * value
        memory[t] = state
    return memory


def _colors(count: int) -> np.ndarray:
    return matplotlib.colormaps["viridis"](np.linspace(0.0, 0.9, count))


def _legend_below(ax, count: int) -> None:
    ncol = count if count <= 6 else math.ceil(count / 2)
    ax.legend(ncol=ncol, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)


def _unit_rms(order: int) -> np.ndarray:
    """``sqrt(2i + 1)``: scales ``P_i`` to a root mean square of 1 over the window."""
    return np.sqrt(2.0 * np.arange(order) + 1.0)


def _heatmap(ax, values: np.ndarray, x_range: tuple[float, float], label: str) -> None:
    """Draw ``values`` (points, order) with the points along x and one row per dimension.

    The colours span -2 to 2: the rows are scaled to a root mean square of about 1.
    """
    order = values.shape[1]
    image = ax.imshow(
        values.T,
        aspect="auto",
        origin="lower",
        extent=(*x_range, -0.5, order - 0.5),
        cmap="RdBu_r",
        vmin=-2.0,
        vmax=2.0,
        interpolation="nearest",
    )
    ax.figure.colorbar(image, ax=ax, label=label, extend="both")


def plot_basis(ax, order: int = 6, theta: float = 1.0, label: str = "(a) ") -> None:
    """The shifted Legendre polynomials ``P_i(2 tau / theta - 1)`` over the window.

    One curve per polynomial up to :data:`MAX_CURVES_ORDER`, a heatmap above it.
    """
    # Enough points to resolve the i zeros of the highest polynomial.
    delays = np.linspace(0.0, theta, max(400, 8 * order))
    basis = legendre.legendre_basis(order, theta, delays)
    title = f"{label}Shifted Legendre basis, order {order}"
    if order > MAX_CURVES_ORDER:
        _heatmap(
            ax,
            basis * _unit_rms(order),
            (0.0, 1.0),
            label=r"$\sqrt{2i+1}\, P_i(2\tau/\theta - 1)$",
        )
        ax.set_xlabel(r"delay $\tau / \theta$")
        ax.set_ylabel("polynomial $i$")
        ax.set_title(title)
        return
    for i, color in enumerate(_colors(order)):
        ax.plot(delays / theta, basis[:, i], color=color, lw=1.8, label=f"$P_{{{i}}}$")
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(-1.1, 1.1)
    ax.set_xlabel(r"delay $\tau / \theta$")
    ax.set_ylabel(r"$P_i(2\tau/\theta - 1)$")
    ax.set_title(title)
    _legend_below(ax, order)


def sampled_impulse_response(
    A_bar: np.ndarray, B_bar: np.ndarray, theta: float, windows: float = RESPONSE_WINDOWS
) -> tuple[np.ndarray, np.ndarray]:
    """The impulse response ``H[k] = A_bar^k B_bar`` for ``0 <= k <= windows * theta``.

    Responses longer than :data:`MAX_RESPONSE_POINTS` steps are sampled every
    ``stride`` steps (``H[j * stride] = (A_bar^stride)^j B_bar``).

    Parameters
    ----------
    A_bar, B_bar : numpy.ndarray
        The discretized memory (:func:`keras_lmu.legendre.discrete_system`).
    theta : float
        Its window, in steps.
    windows : float
        Length of the response, in windows.

    Returns
    -------
    steps, response : numpy.ndarray
        The steps ``k`` (float64, shape ``(points,)``) and ``H[k]``, shape
        ``(points, order)``.
    """
    # Steps 0, stride, ..., up to windows * theta (in this order of operations so that
    # no product overflows, whatever the finite theta).
    stride = max(1, math.ceil(windows / (MAX_RESPONSE_POINTS - 1) * theta))
    points = min(MAX_RESPONSE_POINTS, max(2, math.floor(windows / stride * theta) + 1))
    if stride > 1:
        A_bar = np.linalg.matrix_power(A_bar, stride)
    response = legendre.impulse_response(A_bar, B_bar, points)
    return np.arange(points, dtype=np.float64) * stride, response


def plot_impulse_response(
    ax,
    A_bar: np.ndarray,
    B_bar: np.ndarray,
    theta: float,
    discretizer: str = "zoh",
    label: str = "(b) ",
) -> None:
    """The impulse response of the discretized memory ``(A_bar, B_bar)`` of window
    ``theta`` over about 1.5 windows (``discretizer`` names its discretization in the
    title).

    One curve per dimension up to :data:`MAX_CURVES_ORDER`; above it, a heatmap
    of ``theta * H[k]_i / sqrt(2 i + 1)``, which puts the dimensions on one scale
    (their largest magnitudes, 1.1 to 2.9 at order 40 and theta 100, are not equal).
    The window ``[0, theta]`` is shaded.
    """
    order = A_bar.shape[0]
    steps, response = sampled_impulse_response(A_bar, B_bar, theta)
    title = rf"{label}Impulse response $H[k] = \bar A^k \bar B$ ({discretizer})"
    if order > MAX_CURVES_ORDER:
        half_step = (steps[1] - steps[0]) / 2
        _heatmap(
            ax,
            response * theta / _unit_rms(order),
            (steps[0] - half_step, steps[-1] + half_step),
            label=r"$\theta\, H[k]_i \,/ \sqrt{2i+1}$",
        )
        ax.set_ylabel("dimension $i$")
        ax.axvline(theta, color="black", lw=1.2, ls="--")
        ax.annotate(
            rf"$k = \theta = {theta:g}$",
            xy=(theta, order - 0.5),
            xytext=(4, -4),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=9,
            color="black",
            bbox={"boxstyle": "round", "fc": "white", "ec": "none", "alpha": 0.8},
        )
    else:
        ax.axvspan(0.0, theta, color="tab:orange", alpha=0.12, lw=0)
        marker = "o" if len(steps) <= 60 else None  # short responses: show the steps
        for i, color in enumerate(_colors(order)):
            ax.plot(
                steps,
                response[:, i],
                color=color,
                lw=1.6,
                marker=marker,
                markersize=3,
                label=f"$H[k]_{{{i}}}$",
            )
        ax.axhline(0.0, color="0.6", lw=0.6)
        ax.axvline(theta, color="tab:orange", lw=1.2, ls="--")
        ax.annotate(
            rf"$k = \theta = {theta:g}$",
            xy=(theta, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(4, -4),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=9,
            color="tab:orange",
        )
        ax.set_ylabel(r"$H[k]_i$")
        _legend_below(ax, order)
    ax.set_xlim(steps[0], steps[-1])
    ax.set_xlabel("step $k$ after the impulse")
    ax.set_title(title)


def plot_window(ax, order: int = 12, theta: float = 60.0, steps: int = 240) -> None:
    """A signal and the last ``theta`` steps decoded from the memory at one step."""
    u = smooth_signal(steps)
    A_bar, B_bar = legendre.discrete_system(order, theta, "zoh")
    memory = run_memory(A_bar, B_bar, u)

    t = int(0.8 * steps)
    delays = np.linspace(0.0, theta, 200)
    decoded = legendre.decode_window(memory[t], theta, delays)
    # With zero-order hold, u_t is held over the step that ends at time t, so a
    # delay tau reads the input around step t - tau + 1/2.
    times = t - delays + 0.5

    ax.axvspan(t - theta, t, color="tab:orange", alpha=0.12, lw=0)
    ax.plot(np.arange(steps), u, color="0.25", lw=1.5, label=r"input $u_t$")
    ax.plot(
        times,
        decoded,
        color="tab:orange",
        lw=2.2,
        ls="--",
        label=r"decoded from $m_t$: $\sum_i P_i(2\tau/\theta-1)\, m_{t,i}$",
    )
    ax.axvline(t, color="tab:orange", lw=1.0)
    ax.annotate(
        rf"window $\theta = {theta:g}$ steps",
        xy=(t - theta / 2, -1.08),
        ha="center",
        va="bottom",
        fontsize=9,
        color="tab:orange",
    )
    ax.annotate("$t$", xy=(t, 1.02), ha="center", va="bottom", fontsize=10)
    ax.set_xlim(0, steps - 1)
    ax.set_ylim(-1.15, 1.25)
    ax.set_xlabel("time step")
    ax.set_ylabel("value")
    ax.set_title(f"(b) The memory at step $t$ holds the last $\\theta$ steps (order {order})")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)


def save_figure(figure: Figure, path: os.PathLike | str) -> None:
    """Save ``figure`` at exactly ``path``, in the format its extension names (PNG if none)."""
    extension = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    file_format = extension or "png"
    # Leave matplotlib's version out of PNG files, so that redrawing changes nothing.
    metadata = {"Software": None} if file_format == "png" else None
    figure.savefig(path, format=file_format, dpi=130, metadata=metadata)


def make_basis_figure(
    path: os.PathLike | str,
    order: int,
    theta: float,
    discretizer: str = "zoh",
    system: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Draw the Legendre basis and the memory's impulse response side by side; save at ``path``.

    ``system`` is the memory's ``(A_bar, B_bar)`` where the caller has it already
    (else it is discretized here). The format follows the extension of ``path`` (any
    that matplotlib writes; PNG when there is none): see :func:`supported_formats`.
    Raises ``OSError`` when the file cannot be written and ``ValueError`` for an
    unknown format.
    """
    if system is None:
        system = legendre.discrete_system(order, theta, discretizer)
    A_bar, B_bar = system
    figure = Figure(figsize=(12.0, 4.6), layout="constrained")
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.0, 1.3]})
    plot_basis(left, order, theta)
    plot_impulse_response(right, A_bar, B_bar, theta, discretizer)
    figure.suptitle(f"LMU memory of order {order}, window $\\theta = {theta:g}$ steps")
    save_figure(figure, path)


def make_legendre_figure(path: os.PathLike | str) -> None:
    """Draw the README's figure (the basis, and a window decoded from a memory) at ``path``."""
    figure = Figure(figsize=(11.0, 4.2), layout="constrained")
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.0, 1.6]})
    plot_basis(left)
    plot_window(right)
    save_figure(figure, path)
