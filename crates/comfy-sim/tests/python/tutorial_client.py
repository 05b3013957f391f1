"""The client public ComfyUI API tutorials teach, run against a simulated node.

Queue a prompt with a client id, listen on the websocket until the final `executing` message
with node None for our prompt, read the history, download the image through /view and check
it is a PNG. Exits non-zero with a message on any mismatch.
"""
import json
import sys
import uuid

import requests
import websocket

server = sys.argv[1]  # host:port
client_id = str(uuid.uuid4())

workflow = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 1, "color": 255}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "tutorial"}},
}

ws = websocket.WebSocket()
ws.connect(f"ws://{server}/ws?clientId={client_id}", timeout=10)
resp = requests.post(f"http://{server}/prompt", json={"prompt": workflow, "client_id": client_id}, timeout=10)
resp.raise_for_status()
prompt_id = resp.json()["prompt_id"]

while True:
    out = ws.recv()
    if isinstance(out, str):
        message = json.loads(out)
        if message["type"] == "executing":
            data = message["data"]
            if data["node"] is None and data["prompt_id"] == prompt_id:
                break
ws.close()

history = requests.get(f"http://{server}/history/{prompt_id}", timeout=10).json()[prompt_id]
images = history["outputs"]["3"]["images"]
assert len(images) == 1, f"one image expected, got {images}"
image = images[0]
view = requests.get(f"http://{server}/view", params={"filename": image["filename"], "subfolder": image["subfolder"], "type": image["type"]}, timeout=10)
assert view.status_code == 200, f"/view answered {view.status_code}"
assert view.headers["Content-Type"] == "image/png", view.headers
assert view.content[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
print("tutorial client ok:", image["filename"], len(view.content), "bytes")
