"""Drives swapgraph's ComfyUI API with comfy_api_simplified, a ComfyUI client published on PyPI,
exactly as it drives ComfyUI: reads the node list and the system, uploads the reference photo,
queues the main job, follows it on the websocket until it ends and fetches its image.

Usage: python comfy_client.py URL WORKFLOW.json PHOTO.png SAVE_AS.png; prints what it saw as JSON.
"""

import json
import sys

from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper

url, workflow_path, photo, save_as = sys.argv[1:5]
api = ComfyApiWrapper(url)
object_info = api.get_object_info()
sampler = api.get_object_info("KSampler")["KSampler"]
stats = api.get_system_stats()
uploaded = api.upload_image(photo, subfolder="uploads")

workflow = ComfyWorkflowWrapper(workflow_path)
workflow.set_node_param("Load Image", "image", f"{uploaded['subfolder']}/{uploaded['name']}")
images = api.queue_and_wait_images(workflow, "Save Image")
(name, image), = images.items()
with open(save_as, "wb") as file:
    file.write(image)

queue = api.get_queue()
api.interrupt()
print(json.dumps({
    "node_types": len(object_info),
    "samplers": sampler["input"]["required"]["sampler_name"][0],
    "device_type": stats["devices"][0]["type"],
    "uploaded": uploaded,
    "image_name": name,
    "queue": queue,
}))
