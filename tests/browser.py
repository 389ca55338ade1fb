"""Browser checks shared by the web test and bench/web_audit.py: what would make a person scroll
sideways, and axe-core's accessibility scan."""

from __future__ import annotations

from pathlib import Path

AXE = Path(__file__).parent / "js" / "node_modules" / "axe-core" / "axe.min.js"
WIDTHS = {"desktop": 1280, "phone": 390}


def overflow(page) -> list[str]:
    """What is wider than the window at this width: the page itself, or any box inside it (a table, a plot,
    a form) whose content sticks out of it — what a person would have to scroll sideways for."""
    return page.evaluate(
        """() => {
          const out = [];
          const doc = document.documentElement;
          if (doc.scrollWidth > doc.clientWidth + 1) out.push(`page ${doc.scrollWidth} > ${doc.clientWidth}`);
          for (const el of document.querySelectorAll("main *")) {
            const r = el.getBoundingClientRect();
            if (r.width <= 1 || el.closest("[hidden], .visually-hidden")) continue;  // 1 px: visually hidden
            if (r.right > doc.clientWidth + 1) out.push(`${el.tagName.toLowerCase()}.${el.className} right ${Math.round(r.right)}`);
            if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== "visible")
              out.push(`${el.tagName.toLowerCase()}.${el.className} scrolls ${el.scrollWidth} > ${el.clientWidth}`);
          }
          return out.slice(0, 10);
        }"""
    )


def axe_violations(page) -> list[dict]:
    """axe-core's scan of the page as it is. The script is evaluated by the caller (the page's CSP admits no
    inline script, and the page ships no third-party code)."""
    if not page.evaluate("() => !!window.axe"):
        page.evaluate(AXE.read_text())
    return page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")


def axe_serious(page) -> list[str]:
    """The serious and critical violations, one line each."""
    return [
        f"{v['impact']} {v['id']}: {v['help']} ({len(v['nodes'])}x, e.g. {v['nodes'][0]['target']})"
        for v in axe_violations(page)
        if v["impact"] in ("serious", "critical")
    ]
