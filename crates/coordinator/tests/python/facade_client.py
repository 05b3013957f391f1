"""A ComfyUI API client of the kind public tutorials teach, pointed at the coordinator.

Usage: facade_client.py <http base url>

It queues prompts with POST /prompt, waits for them in the two usual ways (the WebSocket's
final `executing` message with node null, and polling /history/{prompt_id}), downloads every
output through /view, and prints which node each prompt ran on. Any failure exits non-zero.
"""

import json
import sys
import uuid

import requests
import websocket

BASE = sys.argv[1].rstrip("/")
WS_BASE = BASE.replace("http://", "ws://", 1)
CLIENT_ID = str(uuid.uuid4())


def workflow(seed):
    # The SD1.5 text-to-image graph of the tutorials: a sampler that takes a little simulated
    # time, so a burst of prompts needs more than one node.
    return {
        "4": {"class_type": "CheckpointLoaderSimple",
              "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage",
              "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode",
              "inputs": {"text": "a lighthouse at dusk", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler",
              "inputs": {"seed": seed, "steps": 10, "cfg": 7.0, "sampler_name": "euler",
                         "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                         "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage",
              "inputs": {"filename_prefix": "tutorial", "images": ["8", 0]}},
    }


def queue_prompt(prompt, client_id=None):
    body = {"prompt": prompt}
    if client_id:
        body["client_id"] = client_id
    response = requests.post(f"{BASE}/prompt", data=json.dumps(body).encode("utf-8"))
    response.raise_for_status()
    return response.json()["prompt_id"]


def get_history(prompt_id):
    response = requests.get(f"{BASE}/history/{prompt_id}")
    response.raise_for_status()
    return response.json()


def get_image(filename, subfolder, folder_type):
    params = {"filename": filename, "subfolder": subfolder, "type": folder_type}
    response = requests.get(f"{BASE}/view", params=params)
    response.raise_for_status()
    return response.content


def download_outputs(prompt_id):
    entry = get_history(prompt_id)[prompt_id]
    assert entry["status"]["completed"], entry["status"]
    nodes = set()
    for node_output in entry["outputs"].values():
        for image in node_output.get("images", []):
            data = get_image(image["filename"], image["subfolder"], image["type"])
            assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{image} is not a png"
            nodes.add(image["subfolder"].split("/")[0])
    return nodes


def wait_by_websocket(count):
    ws = websocket.WebSocket()
    ws.connect(f"{WS_BASE}/ws?clientId={CLIENT_ID}")
    first = json.loads(ws.recv())
    assert first["type"] == "status" and first["data"]["sid"] == CLIENT_ID, first
    ids = [queue_prompt(workflow(10 + i), CLIENT_ID) for i in range(count)]
    waiting = set(ids)
    while waiting:
        out = ws.recv()
        if not isinstance(out, str):
            continue  # previews
        message = json.loads(out)
        if message["type"] == "executing":
            data = message["data"]
            if data["node"] is None and data["prompt_id"] in waiting:
                waiting.discard(data["prompt_id"])
    ws.close()
    return ids


def wait_by_polling(count):
    import time
    ids = [queue_prompt(workflow(100 + i)) for i in range(count)]
    deadline = time.time() + 60
    for prompt_id in ids:
        while prompt_id not in get_history(prompt_id):
            assert time.time() < deadline, f"{prompt_id} never reached history"
            time.sleep(0.1)
    return ids


def main():
    used = {}
    for way, ids in (("websocket", wait_by_websocket(6)), ("polling", wait_by_polling(6))):
        for prompt_id in ids:
            nodes = download_outputs(prompt_id)
            for node in nodes:
                used[node] = used.get(node, 0) + 1
            print(f"{way}: prompt {prompt_id} ran on {', '.join(sorted(nodes))}")
    queue = requests.get(f"{BASE}/queue").json()
    assert queue == {"queue_running": [], "queue_pending": []}, queue
    print("prompts per node:", json.dumps(used, sort_keys=True))
    assert len(used) == 3, f"jobs did not spread across all three nodes: {used}"
    print("ok")


if __name__ == "__main__":
    main()
