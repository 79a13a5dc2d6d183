"""The worker's models as a whole: which package answers each analysis, and in what order they run.

An analysis may declare ``needs`` on other analyses (of any package): it runs after them and its package
receives their outputs in ``params["needs"]``. The graph is checked when the worker starts — an analysis
claimed by two packages, a need nobody offers, or a cycle stops the load with the packages named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.runtime.model_packages.declaration import PackageInvalid

if TYPE_CHECKING:
    from worker.runtime.model_packages.loader import ModelPackage


@dataclass(frozen=True)
class Step:
    """One model call of a job: the package and the analyses of it the job needs (asked or needed)."""

    package: ModelPackage
    analyses: tuple[str, ...]


class Catalog:
    """Packages by name and by analysis; ``plan`` orders a job's analyses into steps."""

    def __init__(self, packages: Sequence[ModelPackage]) -> None:
        self.packages: tuple[ModelPackage, ...] = tuple(packages)
        self.by_name: dict[str, ModelPackage] = {}
        self.by_analysis: dict[str, ModelPackage] = {}
        self.needs: dict[str, tuple[str, ...]] = {}
        for package in self.packages:
            if package.name in self.by_name:
                other = self.by_name[package.name].folder.name
                raise PackageInvalid(
                    package.folder.name, f"model name {package.name!r} is also used by {other!r}"
                )
            self.by_name[package.name] = package
            for analysis in package.declaration.analyses:
                if analysis.name in self.by_analysis:
                    other = self.by_analysis[analysis.name].folder.name
                    raise PackageInvalid(
                        package.folder.name,
                        f"analysis {analysis.name!r} is also claimed by package {other!r}",
                    )
                self.by_analysis[analysis.name] = package
                self.needs[analysis.name] = analysis.needs
        self._check_needs()
        self.order: tuple[str, ...] = self._topological_order()

    @property
    def analyses(self) -> tuple[str, ...]:
        """Every analysis offered, in a dependency-respecting order (needs first)."""
        return self.order

    def _check_needs(self) -> None:
        for analysis, needs in self.needs.items():
            for need in needs:
                if need not in self.by_analysis:
                    owner = self.by_analysis[analysis].folder.name
                    raise PackageInvalid(
                        owner, f"analysis {analysis!r} needs {need!r}, which no package offers"
                    )

    def _topological_order(self) -> tuple[str, ...]:
        order: list[str] = []
        state: dict[str, str] = {}  # "visiting" | "done"

        def visit(analysis: str, path: list[str]) -> None:
            if state.get(analysis) == "done":
                return
            if state.get(analysis) == "visiting":
                cycle = [*path[path.index(analysis) :], analysis]
                owner = self.by_analysis[analysis].folder.name
                raise PackageInvalid(owner, f"needs form a cycle: {' -> '.join(cycle)}")
            state[analysis] = "visiting"
            for need in self.needs[analysis]:
                visit(need, [*path, analysis])
            state[analysis] = "done"
            order.append(analysis)

        for analysis in sorted(self.needs):
            visit(analysis, [])
        return tuple(order)

    def closure(self, asked: Sequence[str]) -> tuple[str, ...]:
        """``asked`` plus everything they need, transitively, in run order. Unknown names raise KeyError."""
        wanted: set[str] = set()
        stack = list(asked)
        while stack:
            analysis = stack.pop()
            if analysis not in self.needs:
                raise KeyError(analysis)
            if analysis not in wanted:
                wanted.add(analysis)
                stack.extend(self.needs[analysis])
        return tuple(a for a in self.order if a in wanted)

    def plan(self, asked: Sequence[str]) -> tuple[Step, ...]:
        """The model calls a job makes, in an order where every need runs in an earlier step.

        Analyses of one package that do not depend on each other share one call; a package whose analyses
        depend on one another through another package gets a call per level.
        """
        level: dict[str, int] = {}
        for analysis in self.closure(asked):
            level[analysis] = 1 + max((level[n] for n in self.needs[analysis]), default=-1)
        steps: dict[tuple[int, str], list[str]] = {}
        for analysis, depth in level.items():
            steps.setdefault((depth, self.by_analysis[analysis].name), []).append(analysis)
        return tuple(
            Step(self.by_name[name], tuple(analyses)) for (_depth, name), analyses in sorted(steps.items())
        )
