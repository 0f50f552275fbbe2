"""Object detection: data readers (COCO JSON, Pascal VOC, YOLO txt), box-aware augmentation,
anchors and box encoding, detection heads, NMS outside the graph, COCO mAP through pycocotools."""
