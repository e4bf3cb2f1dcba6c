"""Lab 5: a toy detector in two flavours, with IoU, matching, NMS and mAP from scratch."""
