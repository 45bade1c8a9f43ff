"""The web site's HTML: the SVG sanitizer, the image map and links."""

from __future__ import annotations

import pytest

from thehat.webpages import flow_path, image_map, link, sanitize_svg

SVG_HEAD = ('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
            '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"\n'
            ' "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
            '<svg width="10pt" height="10pt" xmlns="http://www.w3.org/2000/svg" '
            'xmlns:xlink="http://www.w3.org/1999/xlink" onload="alert(1)">')


def svg(body: str) -> bytes:
    return (SVG_HEAD + body + "</svg>").encode("utf-8")


def test_sanitize_keeps_drawing_and_tooltips() -> None:
    markup = sanitize_svg(svg(
        '<g id="step-0" class="node"><title>a &lt;b&gt;</title>'
        '<a xlink:href="https://wiki.example/x?a=1&amp;b=2" xlink:title="note &amp; more">'
        '<polygon fill="IndianRed" points="0,0 1,1"/><text x="1">Name: a</text></a></g>'))

    assert markup.startswith('<svg xmlns="http://www.w3.org/2000/svg" '
                             'xmlns:xlink="http://www.w3.org/1999/xlink" width="10pt"')
    assert "<title>a &lt;b&gt;</title>" in markup
    assert ('<a xlink:href="https://wiki.example/x?a=1&amp;b=2" '
            'xlink:title="note &amp; more" target="_blank">') in markup
    assert '<polygon fill="IndianRed" points="0,0 1,1"></polygon>' in markup
    assert '<text x="1">Name: a</text>' in markup


@pytest.mark.parametrize("body, forbidden", [
    ("<script>alert(1)</script>", "alert(1)"),
    ('<script xlink:href="https://evil.example/x.js"/>', "evil"),
    ('<foreignObject><div xmlns="http://www.w3.org/1999/xhtml">hi</div></foreignObject>', "hi"),
    ('<g onclick="alert(2)" OnMouseOver="alert(3)"/>', "alert"),
    ('<g style="background:url(https://evil.example/)"/>', "evil"),
    ('<a xlink:href="javascript:alert(4)"><text>x</text></a>', "javascript"),
    ('<a href=" JavaScript:alert(5)"><text>x</text></a>', "alert"),
    ('<a xlink:href="data:text/html,&lt;script&gt;"><text>x</text></a>', "data:"),
    ('<animate attributeName="href" to="javascript:alert(6)"/>', "javascript"),
    ('<set attributeName="href" to="javascript:alert(7)"/>', "javascript"),
    ('<use xlink:href="https://evil.example/sprite.svg#a"/>', "evil"),
    ('<image xlink:href="https://evil.example/pixel.png"/>', "evil"),
    ('<x:script xmlns:x="http://www.w3.org/1999/xhtml">alert(8)</x:script>', "alert"),
    ('<g xmlns:e="urn:evil" e:onload="alert(9)"/>', "alert"),
])
def test_sanitize_drops_active_content(body: str, forbidden: str) -> None:
    markup = sanitize_svg(svg(body))

    assert forbidden not in markup
    assert "onload" not in markup
    assert "<script" not in markup


def test_sanitize_rejects_other_documents() -> None:
    with pytest.raises(ValueError, match="not well-formed SVG"):
        sanitize_svg(b"<svg")
    with pytest.raises(ValueError, match="root element is 'html', not svg"):
        sanitize_svg(b"<html><script>alert(1)</script></html>")


def test_image_map_keeps_safe_areas() -> None:
    cmapx = (b'<map id="x" name="x">\n'
             b'<area shape="rect" id="n1" href="https://wiki.example/a?b=1&amp;c=2" '
             b'title="&lt;script&gt;" alt="" coords="1,2,3,4"/>\n'
             b'<area shape="poly" href="javascript:alert(1)" title="t" coords="1,2,3,4,5,6"/>\n'
             b'<area shape="rect" href="https://x.example/" '
             b'coords="1,2&quot; onmouseover=&quot;x"/>\n'
             b'<area shape="evil" href="https://x.example/" coords="1,2"/>\n'
             b'</map>')

    markup = image_map(cmapx)

    assert markup.startswith('<map name="graph">')
    assert ('<area shape="rect" coords="1,2,3,4" href="https://wiki.example/a?b=1&amp;c=2" '
            'target="_blank" rel="noreferrer" title="&lt;script&gt;" alt="&lt;script&gt;">'
            in markup)
    assert '<area shape="poly" coords="1,2,3,4,5,6" title="t" alt="t">' in markup
    assert "javascript" not in markup
    assert "onmouseover" not in markup
    assert "evil" not in markup


@pytest.mark.parametrize("url, expected", [
    ("mailto:ops@example.org", '<a href="mailto:ops@example.org" rel="noreferrer">'
                               "mailto:ops@example.org</a>"),
    ("https://x.example/a b\"c", '<a href="https://x.example/a%20b%22c" rel="noreferrer">'
                                 "https://x.example/a b\"c</a>"),
    ("wiki/page", '<span class="unlinked">wiki/page</span>'),
    ("ftp://files.example/", '<span class="unlinked">ftp://files.example/</span>'),
    ("java\tscript:alert(1)", '<span class="unlinked">java\tscript:alert(1)</span>'),
    ("<b>x</b>", '<span class="unlinked">&lt;b&gt;x&lt;/b&gt;</span>'),
    (None, ""),
])
def test_link_only_for_web_and_mail(url: str | None, expected: str) -> None:
    assert link(url) == expected


def test_flow_path_encodes_every_reserved_character() -> None:
    assert flow_path("a/b?c#d e") == "/flows/a%2Fb%3Fc%23d%20e/"
