"""Script payloads planted in event fields: they must come out of every page as inert text."""

PAYLOAD = '<script>alert("tg")</script>'
IMG_PAYLOAD = '"><img src=x onerror=alert(1)>'
SVG_PAYLOAD = "<svg/onload=alert(2)>"
