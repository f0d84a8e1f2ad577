# server.py
#
# Reconstruction of the server code from the student lab report
# (Practical Labwork 1, Distributed System, USTH, Nov 2024; Listing 1),
# undoing the PDF-extraction damage ("server socket" -> server_socket,
# "SAVE DIR" -> SAVE_DIR, "_" in print strings -> spaces, ...).
#
# Wire behaviour is unchanged: accept one client at a time, read the file
# name one byte at a time (recv(1)) up to b'\n', then recv(1024) until EOF,
# writing into SAVE_DIR/<name>. Nothing is ever sent back to the client.
#
# What differs from the report, and nothing else:
#   1. HOST comes from $SEED_HOST (default '127.0.0.1'; the report hard-codes
#      its LAN address '172.27.242.41').
#   2. PORT comes from $SEED_PORT (default 8386, as in the report).
#   3. SAVE_DIR comes from $SEED_DIR (default "uploaded_files", as in the report).
#   4. If $SEED_MAX_CONNECTIONS is set to N, the server returns after N
#      connections have been handled (the report loops forever, which is
#      still the behaviour when the variable is unset).
#
# Kept on purpose, as in the report: the name is not sanitised (a name with
# "../" escapes SAVE_DIR), a client that closes before sending b'\n' makes
# the recv(1) loop spin forever on b'', and SO_REUSEADDR is not set.
import socket
import os
# Server configuration
HOST = os.environ.get("SEED_HOST", "127.0.0.1")  # Replace with your server's IP address
PORT = int(os.environ.get("SEED_PORT", "8386"))  # Port for communication
SAVE_DIR = os.environ.get("SEED_DIR", "uploaded_files")  # Directory to save received files
MAX_CONNECTIONS = os.environ.get("SEED_MAX_CONNECTIONS")  # Unset: serve forever


def start_server():
    # Ensure the save directory exists
    if not os.path.exists(SAVE_DIR):
        os.makedirs(SAVE_DIR)
    # Create a TCP socket
    server_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server_socket.bind((HOST, PORT))  # Bind to the server IP and port
    server_socket.listen(1)  # Allow one client connection at a time
    print(f"Server listening on {HOST}:{PORT}...")
    handled = 0
    while MAX_CONNECTIONS is None or handled < int(MAX_CONNECTIONS):
        # Accept a connection from a client
        conn, addr = server_socket.accept()
        print(f"Connection established with {addr}")
        try:
            # Receive the filename first, up to the newline character
            filename = b""
            while True:
                byte = conn.recv(1)
                if byte == b'\n':  # Delimiter indicates the end of the filename
                    break
                filename += byte
            filename = filename.decode('utf-8')  # Decode bytes to string
            print(f"Receiving file: {filename}")
            # Define full path to save the file
            save_path = os.path.join(SAVE_DIR, filename)
            # Open the file to save the incoming data
            with open(save_path, 'wb') as file:
                while True:
                    data = conn.recv(1024)  # Receive file data in chunks (1KB)
                    if not data:  # Condition to check if the file transfer is complete
                        break
                    file.write(data)
            print(f"File '{filename}' received and saved in '{SAVE_DIR}/'.")
        except Exception as e:
            print(f"Error receiving file: {e}")
        finally:
            conn.close()  # Close the client connection
            print(f"Connection with {addr} closed.")
        handled += 1


if __name__ == "__main__":
    start_server()
