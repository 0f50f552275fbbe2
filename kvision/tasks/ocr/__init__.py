"""Text-line recognition (OCR): CRNN + CTC, text-line datasets and their charset."""
